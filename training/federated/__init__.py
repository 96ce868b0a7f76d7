"""Federated training offline: FedSubAvg / FedAvg / central experiment, publishing the model."""
