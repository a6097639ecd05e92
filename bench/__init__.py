"""Benchmarks: each times the raw tools and the flow in the same run, prints one JSON line."""
