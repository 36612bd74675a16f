"""Measuring: the timing core (CUDA events, the covered loop, CUDA-graph replay, ``perf_counter``),
dtype-aware comparison, and whether a candidate is a correct stand-in for the reference."""
