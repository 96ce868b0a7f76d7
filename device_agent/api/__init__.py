"""REST API that apps call: recommend, events, status, health, metrics."""
