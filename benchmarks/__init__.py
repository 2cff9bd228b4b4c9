"""The benchmark of issue 5 (not part of the runner package): python benchmarks/bench.py."""
