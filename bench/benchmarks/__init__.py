"""Benchmarks that print timings measured side by side; run them with python -m bench perf."""
