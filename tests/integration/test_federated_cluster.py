"""A federated round on a real 3-master Redis Cluster: push, aggregate, the model advances."""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster

from cloud_service.settings import StoreSettings
from cloud_service.store.redis_store import build_redis
from tests.integration.conftest import StartCloud
from tests.integration.test_federated import test_round_life_cycle_applies_fedsubavg as life_cycle

pytestmark = pytest.mark.integration


def test_round_life_cycle_on_a_cluster(start_cloud: StartCloud, redis_cluster_url: str) -> None:
    life_cycle(lambda **kw: start_cloud(redis_url=redis_cluster_url, redis_cluster=True, **kw))
    client = RedisCluster.from_url(redis_cluster_url)
    try:
        fl_node = client.get_node_from_key("{fl}")
        fl_keys = client.keys(target_nodes=fl_node)
        # the round's state all sits on the master owning {fl}'s slot, and only there
        assert any(b"{fl}" in k for k in fl_keys)
        others = [n for n in client.get_primaries() if n.name != fl_node.name]
        assert len(others) == 2
        assert not any(b"{fl}" in k for n in others for k in client.keys(target_nodes=n))
    finally:
        client.close()


def test_cluster_setting_builds_a_cluster_client(redis_cluster_url: str) -> None:
    s = StoreSettings(redis_url=redis_cluster_url, redis_cluster=True)
    client = build_redis(s.redis_url, s.redis_socket_timeout_s, s.redis_retries, s.redis_cluster)
    try:
        assert isinstance(client, RedisCluster) and client.ping()
    finally:
        client.close()
    with pytest.raises(ValueError, match="database 0"):
        StoreSettings(redis_url=redis_cluster_url + "/3", redis_cluster=True)
