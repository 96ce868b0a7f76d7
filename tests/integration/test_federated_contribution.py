"""Contribution scores in the live aggregator on a real Redis: recorded per round, shown over
HTTP, and with CLOUD_FL_EXCLUDE_LOW_CONTRIB on a gradient-ascent push is left out (issue 15)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from cloud_service.federated.contribution import ContributionRule, ValidationSignal, encode_signal
from cloud_service.server import CloudServer
from cloud_service.services.container import CloudServices
from tests.integration.conftest import StartCloud
from tests.integration.test_federated import DIM, Phone, aggregator, open_round, rows_of

pytestmark = pytest.mark.integration
FL = {"fl_devices_per_round": 6, "fl_over_select": 0.0, "fl_quorum_share": 1.0, "fl_round_s": 30}
ROW = 9
GRAD = np.linspace(0.2, 0.8, DIM)  # the validation loss's gradient on ROW


def store_signal(services: CloudServices, version: int) -> None:
    fed = services.federated
    assert fed is not None
    sig = ValidationSignal(
        version, np.array([ROW]), GRAD[None, :], np.full((1, DIM), 0.5), damping=0.05, examples=64
    )
    fed.store.put_signal(version, encode_signal(sig))


def one_round(
    server: CloudServer, services: CloudServices, rule: ContributionRule, tag: str
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """5 devices step down the validation gradient on ROW (with noise), one steps up it (gradient
    ascent); returns (the row's move, the honest mean, the round's end state)."""
    phones = [Phone(server, services, f"h-{i}") for i in range(5)]
    evil = Phone(server, services, "ascent")
    agg = aggregator(services)
    agg.contribution = rule
    info = open_round(agg, [*phones, evil])
    before = rows_of(evil, [ROW])
    rng = np.random.default_rng(0)
    honest = [(-0.1 * GRAD + rng.normal(0, 0.01, DIM)).astype(np.float32) for _ in phones]
    for p, d in zip(phones, honest, strict=True):
        assert p.push(info.round_id, info.base_version, [ROW], d[None], f"{p.device_id}-{tag}")
    up = (0.3 * GRAD).astype(np.float32)[None]
    assert evil.push(info.round_id, info.base_version, [ROW], up, f"ascent-{tag}").accepted
    state = agg.step(block_ms=50)
    return (rows_of(evil, [ROW]) - before)[0], np.mean(honest, axis=0), state


def contributions(server: CloudServer, **params: int) -> httpx.Response:
    url = f"http://127.0.0.1:{server.http_port}/v1/federated/contributions"
    return httpx.get(url, params=params, timeout=5)


def test_scores_are_recorded_per_round_and_the_ascent_push_scores_lowest(
    start_cloud: StartCloud,
) -> None:
    server, services = start_cloud(**FL)
    store_signal(services, 0)
    moved, honest_mean, state = one_round(server, services, ContributionRule("fisher", 0.0), "a")
    assert state == "applied"
    np.testing.assert_allclose(moved, (5 * honest_mean + 0.3 * GRAD) / 6, rtol=1e-4)  # all in
    fed = services.federated
    assert fed is not None
    [record] = fed.store.contributions(5)
    assert (record.state, record.mode, record.signal_version, record.excluded) == (
        "applied", "fisher", 0, (),
    )  # fmt: skip
    assert set(record.scores) == {"ascent", *(f"h-{i}" for i in range(5))}
    assert min(record.scores, key=record.scores.__getitem__) == "ascent"
    assert record.scores["ascent"] < 0 < min(v for d, v in record.scores.items() if d != "ascent")
    body = contributions(server, k=2).json()["rounds"]
    assert len(body) == 1 and body[0]["devices"] == 6 and body[0]["version_distance"] == 0
    assert body[0]["bottom"][0]["device_id"] == "ascent" and len(body[0]["top"]) == 2


def test_with_exclusion_on_the_ascent_push_is_left_out_of_the_applied_aggregate(
    start_cloud: StartCloud,
) -> None:
    fl_settings = {**FL, "fl_quorum_share": 0.8}  # quorum 5 of 6: one may be left out
    server, services = start_cloud(
        **fl_settings, fl_exclude_low_contrib=0.2, fl_contrib_mode="first_order"
    )
    fl = services.settings.federated
    rule = ContributionRule(fl.contrib_mode, fl.exclude_low_contrib)  # as the aggregator's main
    store_signal(services, 0)
    moved, honest_mean, state = one_round(server, services, rule, "b")
    assert state == "applied"
    np.testing.assert_allclose(moved, honest_mean, rtol=1e-4)  # ⌊0.2 × 6⌋ = 1 left out
    body = contributions(server).json()["rounds"][0]
    assert body["excluded"] == ["ascent"] and body["mode"] == "first_order"
    assert body["devices"] == 6  # every update is scored and recorded, the left-out one too


def test_without_a_signal_nothing_is_scored_or_left_out(start_cloud: StartCloud) -> None:
    server, services = start_cloud(**FL)
    moved, honest_mean, state = one_round(server, services, ContributionRule("fisher", 0.5), "c")
    assert state == "applied"
    np.testing.assert_allclose(moved, (5 * honest_mean + 0.3 * GRAD) / 6, rtol=1e-4)
    assert contributions(server).json() == {"rounds": []}
    for bad in ({"rounds": 0}, {"rounds": 10_000}, {"k": -1}):
        assert contributions(server, **bad).status_code == 422


def test_the_signal_job_stores_a_signal_the_live_aggregator_scores_with(
    start_cloud: StartCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m training.federated.contribution_signal --validation F` end to end: it reads the
    federated model from this cloud's Redis, stores the signal under the model's version, and
    the next round is scored with it (every pushing device, the ascent one lowest)."""
    from training.federated.contribution_signal import ValidationLog, main

    server, services = start_cloud(**FL)
    s = services.settings
    monkeypatch.setenv("CLOUD_REDIS_URL", s.store.redis_url)
    monkeypatch.setenv("CLOUD_KEY_PREFIX", s.store.key_prefix)
    monkeypatch.setenv("CLOUD_BUNDLE_DIR", str(s.models.bundle_dir))
    rng = np.random.default_rng(3)
    n = 48
    history = rng.integers(0, ROW + 1, size=(n, 30))
    history[:, :20] = -1
    log = ValidationLog(
        history, np.full(n, ROW), rng.integers(0, 4, n), (rng.random(n) < 0.5).astype(np.int8),
        np.zeros(n, np.int8),
    )  # fmt: skip
    log.save(tmp_path / "val.npz")
    assert main(["--validation", str(tmp_path / "val.npz"), "--sample", "32"]) == 0
    fed = services.federated
    assert fed is not None
    found = fed.store.get_signal(fed.store.version())
    assert found is not None
    from cloud_service.federated.contribution import decode_signal

    signal = decode_signal(found[1])
    assert ROW in signal.row_ids.tolist() and signal.row_grad.shape[1] == DIM
    assert np.isfinite(signal.row_grad).all() and (signal.row_fisher >= 0).all()
    rule = ContributionRule("fisher", 0.0)
    _, _, state = one_round(server, services, rule, "job")
    assert state == "applied"
    [record] = fed.store.contributions(1)
    assert set(record.scores) == {*(f"h-{i}" for i in range(5)), "ascent"}
    assert record.signal_version == found[0]
