"""The federated update type with its one codec, and the privacy math devices and cloud share."""
