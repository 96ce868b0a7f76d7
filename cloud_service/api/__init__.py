"""REST transport: thin FastAPI routes under /v1 over the same domain services as gRPC."""
