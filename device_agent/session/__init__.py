"""On-device session state: the cached pool, recent behaviour, the request view and the pacer."""
