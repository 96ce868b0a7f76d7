"""Runs the Tandem topology as plain processes on one machine (Redis, cloud, agents, demo)."""
