"""On-device inference with ONNX Runtime only (no torch on this path)."""
