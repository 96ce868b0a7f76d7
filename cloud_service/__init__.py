"""The cloud: large recommender, federated parameter server, model registry, request budget."""
