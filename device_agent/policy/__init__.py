"""The device's request decision: interest shift, value of a cloud request, pacing (pure math)."""
