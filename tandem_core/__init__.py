"""What both processes run (no grpc, fastapi, redis): models, federated update, artifacts."""
