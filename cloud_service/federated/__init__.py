"""Federated submodel learning in the cloud: aggregation math, rounds and the aggregator loop."""
