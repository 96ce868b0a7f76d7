"""The demo loop's served windows: our fleet's steps and reward per step under each version."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_service.registry.bundle import UNCHECKED
from localrun.demo_loop import Sample, served_windows


def test_steps_count_for_the_version_the_next_sample_saw() -> None:
    samples = [
        Sample(0.0, "a", 0, 0.0), Sample(1.0, "a", 10, 5.0), Sample(2.0, "", 15, 7.0),
        Sample(3.0, "b", 30, 9.0), Sample(4.0, "b", 40, 9.0),
    ]  # fmt: skip
    windows = served_windows(samples)
    assert [w["version"] for w in windows] == ["a", "b"]
    a, b = windows
    assert (a["from_s"], a["to_s"], a["steps"]) == (0.0, 1.0, 10)
    assert a["reward_per_step"] == pytest.approx(0.5)
    # the unanswered sample is skipped: its steps go to the next answered one
    assert (b["from_s"], b["to_s"], b["steps"]) == (1.0, 4.0, 30)
    assert b["reward_per_step"] == pytest.approx(4.0 / 30, abs=1e-4)


def test_settled_waits_for_the_last_promotion_to_be_served_long_enough() -> None:
    import numpy as np

    from localrun.demo_loop import ModelLoop
    from training.gate import Validation

    empty = Validation(np.zeros((0, 30)), np.zeros(0), np.zeros(0), "none")
    loop = ModelLoop("redis://unused", "p", Path("unused"), empty, None, UNCHECKED, 0, "s")
    loop.samples = [Sample(0.0, "a", 0, 0.0), Sample(1.0, "a", 1, 0.0)]
    assert loop.settled(after_s=5.0)  # never changed: nothing to wait for
    loop.samples += [Sample(2.0, "b", 2, 0.0), Sample(5.0, "b", 3, 0.0)]
    assert not loop.settled(after_s=5.0)  # "b" served for 3 s only
    loop.samples.append(Sample(7.5, "b", 4, 0.0))
    assert loop.settled(after_s=5.0)
