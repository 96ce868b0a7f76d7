"""Domain services: what both transports call; no grpc, fastapi or redis types cross this line."""
