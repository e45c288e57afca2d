"""Moderation benchmark: classifier quality on the dev split, PII detectors on the Presidio
synthetic set, and the cost of moderating a stream (``python -m bench.moderation``)."""
