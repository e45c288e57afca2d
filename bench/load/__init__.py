"""Load benchmark: ``python -m bench.load`` (see ``bench/load/__main__.py``)."""
