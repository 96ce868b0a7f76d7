"""Federated submodel learning: parameter server, rounds, aggregation, index privacy."""
