"""Offline training, export, publishing and experiments (torch; the `train` extra). No runtime package imports it."""
