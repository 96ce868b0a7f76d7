"""What both processes run, free of grpc, fastapi and redis: models, the federated update, privacy math, the artifact format."""
