"""The cloud recommender at serving time: retrieval and the ONNX ranker."""
