"""Deciding: candidates, ranges and the plan, tuning inputs, the tuner and split-point discovery,
tables, the persistent cache and recorded sizes."""
