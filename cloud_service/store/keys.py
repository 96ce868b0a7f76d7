"""Redis key names: one prefix, hash-tagged so multi-key calls stay in one cluster slot."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "tandem"

    def session(self, device_id: str) -> str:
        # v2: actions stored as domain codes 0..2 (v1 held the wire's 1..3)
        return f"{self.prefix}:{{dev:{device_id}}}:session:v2"

    def budget(self, name: str = "cloud") -> str:
        return f"{self.prefix}:{{budget:{name}}}"

    def events(self) -> str:
        return f"{self.prefix}:{{events}}"

    def event_batch(self, device_id: str, batch_id: str) -> str:
        """Claim of a stored batch; in the stream's slot, so the append script may touch both."""
        return f"{self.prefix}:{{events}}:batch:{device_id}:{batch_id}"
