"""Benchmarks of mdu-speech against its baselines: `python -m bench.run [--quick] [--device cpu|cuda]`.

Benchmarks are not tests: they measure and record (bench/results.json, bench/results.md) and print targets as
pass/miss; `tests/test_bench.py` only runs them on the tiny config and checks the records are consistent.
"""
