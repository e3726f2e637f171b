"""Benchmarks: scripts that print their figures (`make bench`); not pass/fail tests."""
