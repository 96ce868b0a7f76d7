"""gRPC transport: thin servicers over the domain services, health and reflection."""
