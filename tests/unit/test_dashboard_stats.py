"""The dashboard's arithmetic: quantiles from histogram buckets, deltas, the sample ring."""

from __future__ import annotations

import math

import pytest

from cloud_service.api.dashboard import (
    AgentCounts,
    Sample,
    SampleRing,
    answer_delta,
    bucket_delta,
    quantile,
)

pytestmark = pytest.mark.unit
INF = math.inf


def sample(t: float, **agents: tuple[int, int]) -> Sample:
    counts = {url: AgentCounts(*c) for url, c in agents.items()}
    return Sample(t, {}, {}, (), counts)


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    buckets = ((0.01, 0.0), (0.02, 50.0), (0.04, 100.0), (INF, 100.0))
    assert quantile(0.5, buckets) == pytest.approx(0.02)
    assert quantile(0.25, buckets) == pytest.approx(0.015)  # halfway through (0.01, 0.02]
    assert quantile(0.99, buckets) == pytest.approx(0.02 + 0.02 * 49 / 50)
    assert quantile(0.5, ((0.01, 10.0), (INF, 10.0))) == pytest.approx(0.005)  # from 0


def test_quantile_past_the_last_bound_is_that_bound_and_none_without_calls() -> None:
    assert quantile(0.99, ((0.01, 1.0), (0.02, 1.0), (INF, 10.0))) == 0.02
    assert quantile(0.5, ((0.01, 0.0), (INF, 0.0))) is None
    assert quantile(0.5, ()) is None


def test_bucket_delta_subtracts_per_bound() -> None:
    assert bucket_delta(((0.01, 5.0), (INF, 9.0)), ((0.01, 2.0), (INF, 3.0))) == (
        (0.01, 3.0),
        (INF, 6.0),
    )
    assert bucket_delta(((INF, 4.0),), ()) == ((INF, 4.0),)  # no baseline: everything is new


def test_answer_delta_skips_agents_not_seen_twice_or_restarted() -> None:
    old = sample(0.0, a=(1, 10), b=(5, 50))
    new = sample(1.0, a=(2, 14), b=(0, 3), c=(7, 7))  # b restarted, c is new
    assert answer_delta(new, old) == (1, 4)


def test_ring_keeps_spaced_samples_and_picks_the_window_baseline() -> None:
    ring = SampleRing(size=3, min_spacing_s=0.5)
    for t in (0.0, 0.2, 1.0, 2.0, 3.0):  # 0.2 is too close to 0.0; size 3 drops 0.0
        ring.add(sample(t))
    assert [s.t for s in ring.samples] == [1.0, 2.0, 3.0]
    assert ring.baseline(now=3.5, window_s=1.0) is not None
    assert ring.baseline(now=3.5, window_s=1.0).t == 2.0  # type: ignore[union-attr]
    assert ring.baseline(now=3.5, window_s=10.0).t == 1.0  # type: ignore[union-attr]
    assert [(a.t, b.t) for a, b in ring.pairs(1)] == [(2.0, 3.0)]
    assert SampleRing(3, 0.5).baseline(now=1.0, window_s=1.0) is None
