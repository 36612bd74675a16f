"""Tracing: the dispatch inside ``torch.compile`` graphs and ``torch.export`` programs."""
