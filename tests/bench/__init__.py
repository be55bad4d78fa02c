"""Benchmarks: `make bench` runs every `bench_*.py` here and writes bench/REPORT.md and JSON."""
