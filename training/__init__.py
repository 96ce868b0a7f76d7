"""Offline training, export, publishing and experiments (torch); no runtime package imports it."""
