"""Benchmarks: ``python -m bench.run`` (``make bench``) prints one JSON object as its last line."""
