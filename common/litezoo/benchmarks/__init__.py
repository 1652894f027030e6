"""Benchmarks behind ``litezoo benchmark ...``: each returns a markdown report and writes it to a file."""
