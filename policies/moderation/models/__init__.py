"""Model files shipped with the moderation engine (``moderation.onnx``)."""
