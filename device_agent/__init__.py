"""The device agent: session, ONNX re-ranking, request decisions, local training."""
