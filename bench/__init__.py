"""Benchmarks: each ``bench/bench_*.py`` is a script; results are recorded in BENCHMARKS.md."""
