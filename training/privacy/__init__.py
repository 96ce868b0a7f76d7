"""Offline audits of the device's privacy mechanisms against the simulated fleet."""
