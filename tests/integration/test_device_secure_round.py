"""The agent's own trainer through a whole secure-aggregation round, against a real cloud."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cloud_service.build import build_round_config
from cloud_service.federated.aggregator import Aggregator
from cloud_service.federated.defences import Defences
from cloud_service.federated.secure_rounds import SecureConfig, SecureRounds
from device_agent.build import Agent
from tests.integration.conftest import StartCloud
from tests.integration.test_device_agent import feed

pytestmark = pytest.mark.integration
DEVICES = ("sec-a", "sec-b", "sec-c")
FL = {"fl_devices_per_round": 3, "fl_over_select": 0.0, "fl_quorum_share": 0.6, "fl_round_s": 60}


def test_agent_devices_run_a_secure_round_that_is_applied(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, services = start_cloud(**FL)
    fed = services.federated
    assert fed is not None and fed.secure is not None
    url, server = start_agent(
        cloud.grpc_port, train=True, train_min_examples=8, train_interval_s=3600
    )
    agent: Agent = server.agent
    for device in DEVICES:
        feed(url, device, steps=6, click_every=2)
    assert {o.state for o in agent.trainer.run_once()} == {"no_round"}  # check-ins
    secure = SecureRounds(fed.secure.secagg, fed.store, SecureConfig(phase_s=60), fed.dim,
                          fed.dense_shapes)  # fmt: skip
    agg = Aggregator(
        fed.store, build_round_config(services.settings.federated), fed.dim, Defences(),
        "agg-sec", rng=np.random.default_rng(0), secure=secure,
    )  # fmt: skip
    agg.step(block_ms=10)  # opens a secure round over the three devices
    version = fed.store.version()
    examples = dict(agent.service.examples.devices())  # type: ignore[union-attr]
    touched = np.unique(np.concatenate([examples[d].true_ids() for d in DEVICES]))
    before, _, _ = fed.store.snapshot(touched.tolist(), fed.dim)

    assert agent.trainer.next_wait_s() == 3600  # nothing under way: the interval
    states, waits = [], []
    for _ in range(5):  # keys, shares, masked, unmask, done: a stage per pass
        states.append(sorted({o.state for o in agent.trainer.run_once()}))
        waits.append(agent.trainer.next_wait_s())
        agg.step(block_ms=10)
    assert waits == [1.0, 1.0, 1.0, 1.0, 3600]  # polled fast only while a round is under way
    assert states[:4] == [["secagg:keys"], ["secagg:shares"], ["secagg:masked"],
                          ["secagg:unmask"]]  # fmt: skip
    assert states[4] == ["pushed"]
    assert fed.store.version() == version + 1
    after, _, _ = fed.store.snapshot(touched.tolist(), fed.dim)
    assert (np.abs(after - before).max(axis=1) > 0).mean() > 0.3  # trained rows moved
    # the aggregator's last step opened the next round: the devices join it
    assert {o.state for o in agent.trainer.run_once()} == {"secagg:keys"}
