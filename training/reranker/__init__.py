"""The device re-ranker (EdgeRec): distillation from the cloud ranker, ONNX export, evaluation."""
