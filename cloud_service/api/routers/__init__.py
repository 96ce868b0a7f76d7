"""One router per REST resource, each built over the replica's `CloudServices`."""
