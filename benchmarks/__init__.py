"""Benchmarks: scripts that measure speed and quality and write tables to benchmarks/results/."""
