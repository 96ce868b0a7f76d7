"""Federated training offline: FedSubAvg vs FedAvg vs central experiment, publishing the federated model."""
