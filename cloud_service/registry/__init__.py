"""Model registry: the ranker's serving bundle and the on-device ONNX models, verified by sha256."""
