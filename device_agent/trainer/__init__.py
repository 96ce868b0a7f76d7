"""On-device federated training of the ranker's submodel (torch here, not on the inference path)."""
