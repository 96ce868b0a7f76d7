"""On-device federated training against a real cloud and Redis: events → local data → a round."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cloud_service.build import build_round_config
from cloud_service.federated.aggregator import Aggregator
from cloud_service.federated.defences import Defences
from device_agent.build import Agent
from tests.integration.conftest import StartCloud
from tests.integration.test_device_agent import feed

pytestmark = pytest.mark.integration
FL = {"fl_devices_per_round": 2, "fl_over_select": 0.0, "fl_quorum_share": 1.0, "fl_round_s": 60}


def test_agent_devices_train_and_their_round_is_applied(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, services = start_cloud(**FL)
    fed = services.federated
    assert fed is not None
    url, server = start_agent(
        cloud.grpc_port, train=True, train_min_examples=8, train_interval_s=3600,
        train_keep_prob=0.9, train_decoy_prob=0.2,
    )  # fmt: skip
    agent: Agent = server.agent
    for device in ("fl-a", "fl-b"):
        feed(url, device, steps=6, click_every=2)
    examples = dict(agent.service.examples.devices())  # type: ignore[union-attr]
    assert all(len(examples[d]) == 24 for d in ("fl-a", "fl-b"))  # 6 pages × 4 exposures
    assert examples["fl-a"].arrays()["click"].sum() > 0

    first = agent.trainer.run_once()  # check-in only: no round is open yet
    assert {o.state for o in first} == {"no_round"}
    agg = Aggregator(
        fed.store, build_round_config(services.settings.federated), fed.dim, Defences(), "agg-t",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    agg.step(block_ms=10)  # opens a round over the two checked-in devices
    version = fed.store.version()
    touched = np.unique(np.concatenate([examples["fl-a"].true_ids(), examples["fl-b"].true_ids()]))
    before, _, _ = fed.store.snapshot(touched.tolist(), fed.dim)

    pushed = agent.trainer.run_once()
    assert [o.state for o in pushed] == ["pushed", "pushed"]
    assert all(0 < o.samples <= 24 and o.rows >= 1 for o in pushed)  # p = 0.9 drops a few
    assert all(np.isclose(o.epsilon, np.log(0.9 * 0.8 / (0.2 * 0.1))) for o in pushed)
    again = agent.trainer.run_once()  # a device pushes once per round
    assert {o.state for o in again} == {"already_pushed"}
    agent.trainer.rounds_done.clear()  # as after a restart: the device forgot it pushed
    forgot = agent.trainer.run_once()  # trains, pushes a new update id; the cloud says no
    assert {o.state for o in forgot} == {"already_pushed"}  # not an error: the round is done
    assert set(agent.trainer.rounds_done) == {"fl-a", "fl-b"}

    for _ in range(20):
        if agg.step(block_ms=50) == "applied":
            break
    assert fed.store.version() == version + 1
    after, _, _ = fed.store.snapshot(touched.tolist(), fed.dim)
    changed = np.abs(after - before).max(axis=1) > 0
    assert changed.mean() > 0.5  # the rows the phones trained moved on the server


def test_a_dead_cloud_does_not_break_training_passes(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, _ = start_cloud(**FL)
    url, server = start_agent(cloud.grpc_port, train=True, train_min_examples=4)
    feed(url, "fl-c", steps=3)
    cloud.stop(grace_s=0.1)
    outcomes = server.agent.trainer.run_once()
    assert [o.state for o in outcomes] in (["unavailable"], ["timeout"], ["error"])
