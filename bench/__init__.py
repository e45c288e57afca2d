"""Benchmarks of Switchyard; each one runs as ``python -m bench.<name>``."""
