"""Redis key names: one prefix, hash-tagged so multi-key calls stay in one cluster slot."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "tandem"

    def session(self, device_id: str) -> str:
        return f"{self.prefix}:{{dev:{device_id}}}:session"

    def row_shard(self, version: str, shard: int) -> str:
        # one hash per (version, shard): HMGET reads many rows in one slot, shards spread slots
        return f"{self.prefix}:{{emb:{version}:{shard}}}"

    def budget(self, name: str = "cloud") -> str:
        return f"{self.prefix}:{{budget:{name}}}"

    def events(self) -> str:
        return f"{self.prefix}:{{events}}"
