"""Model registry: the ranker's serving bundle (hot-swapped) and the on-device ONNX models, signed
by the release key and verified (signature, kind, confined paths, sha256) before they serve."""
