"""Model files shipped with the router (the difficulty classifier's ``difficulty.onnx``)."""
