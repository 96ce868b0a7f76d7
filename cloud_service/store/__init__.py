"""Storage behind interfaces: Redis for the service, in-memory for tests; one contract suite."""
