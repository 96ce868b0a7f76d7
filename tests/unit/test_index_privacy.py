"""The device's index privacy: memo draws, the fixed-bit pull, the pool, key and ledger files."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import numpy as np
import pytest

from device_agent.trainer.examples import LocalExamples
from device_agent.trainer.index_privacy import (
    KEY_BYTES,
    IndexPrivacy,
    PrivacyConfig,
    load_public_pool,
)
from protos.actions import Action
from tandem_core.federated.accountant import IndexLedger
from tandem_core.federated.privacy import epsilon, item_uniforms, permanent_pad

pytestmark = pytest.mark.unit
P, Q = 0.9, 0.1
KEY = bytes(range(32))
EMPTY = np.empty(0, dtype=np.int64)


def test_item_uniforms_are_keyed_deterministic_draws_in_the_unit_interval() -> None:
    ids = np.arange(-5, 2000)
    u = item_uniforms(KEY, ids)
    assert np.array_equal(u, item_uniforms(KEY, ids)) and ((u >= 0) & (u < 1)).all()
    assert abs(u.mean() - 0.5) < 0.05 and len(np.unique(u)) == len(ids)
    assert not np.array_equal(u, item_uniforms(bytes(32), ids))
    with pytest.raises(ValueError):
        item_uniforms(b"short", ids)


def test_a_pull_holds_pool_ids_only_and_never_a_true_id_outside_the_pool() -> None:
    pool, true = np.arange(100, 400), np.concatenate([np.arange(100, 150), [7, 8, 9]])
    pull = permanent_pad(KEY, EMPTY, np.empty(0, dtype=bool), true, pool, P, Q)
    assert set(pull.ids.tolist()) <= set(pool.tolist())
    assert pull.outside_pool == 3 and len(pull.new_ids) == len(pool)
    u = item_uniforms(KEY, pool)
    expected = pool[u < np.where(np.isin(pool, true), P, Q)]
    assert np.array_equal(pull.ids, expected)  # u < p when true, u < q when not
    assert pull.withheld == 50 - np.isin(np.arange(100, 150), pull.ids).sum()


def test_released_bits_stay_fixed_whatever_the_status_does() -> None:
    pool = np.arange(0, 500)
    first = permanent_pad(KEY, EMPTY, np.empty(0, dtype=bool), np.arange(0, 50), pool, P, Q)
    order = np.argsort(first.new_ids)
    released, bits = first.new_ids[order], first.new_pulled[order]
    flipped = np.arange(250, 300)  # the old true ids are gone, others became true
    again = permanent_pad(KEY, released, bits, flipped, pool, P, Q)
    assert np.array_equal(again.ids, first.ids) and len(again.new_ids) == 0
    # a newly true id fixed as "not pulled" stays out of training, counted
    assert again.withheld == 50 - np.isin(flipped, first.ids).sum() > 0


def test_the_public_pool_covers_true_ids_the_cloud_never_sent(tmp_path: Path) -> None:
    index = IndexPrivacy(public_pool=np.arange(1000, 1100))
    true = np.array([1001, 1002, 5000])  # never sent; 5000 not public either
    pull = index.pad("d", true, np.arange(10), P, Q)
    assert pull.pool_size == 110 and pull.outside_pool == 1 and 5000 not in pull.ids
    summary = index.ledger("d").summary()
    assert summary["withheld_outside_pool"] == 1 and summary["last_pull"]["outside_pool"] == 1


def test_the_public_pool_file(tmp_path: Path) -> None:
    f = tmp_path / "popular.txt"
    f.write_text("30\n10\n\n20\n10\n")
    assert load_public_pool(f, 0).tolist() == [10, 20, 30]
    assert load_public_pool(f, 2).tolist() == [10, 30]  # the first two lines
    assert load_public_pool(None, 4).tolist() == [0, 1, 2, 3]  # the catalogue's first ids
    assert load_public_pool(None, 0).tolist() == []
    for bad in ("3\nx\n", "-1\n"):
        f.write_text(bad)
        with pytest.raises(ValueError, match="public pool"):
            load_public_pool(f, 0)


def test_keys_and_ledgers_on_disk_are_private_and_keep_the_spend(tmp_path: Path) -> None:
    index = IndexPrivacy(tmp_path)
    index.pad("../../escape", np.arange(5), np.arange(40), P, Q)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(n.endswith((".key", ".json")) for n in files)  # in the dir
    key_file = next(tmp_path.glob("*.key"))
    key = key_file.read_bytes()
    assert len(key) == KEY_BYTES and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    ledger_text = next(tmp_path.glob("*.json")).read_text()
    assert key.hex() not in ledger_text and json.loads(ledger_text)["device_id"] == "../../escape"
    led = IndexPrivacy(tmp_path).ledger("../../escape")  # a restart reads it back
    assert len(led.items) == 40 and led.max_epsilon == pytest.approx(epsilon(P, Q))


def test_a_lost_key_is_a_rekeying_and_costs_its_items_again(tmp_path: Path) -> None:
    IndexPrivacy(tmp_path).pad("d", np.arange(5), np.arange(40), P, Q)
    next(tmp_path.glob("*.key")).unlink()
    index = IndexPrivacy(tmp_path)
    index.pad("d", np.arange(5), np.arange(40), P, Q)
    summary = index.ledger("d").summary()
    assert summary["rekeys"] == 1 and not summary["history_lost"]
    assert summary["max_item_epsilon"] == pytest.approx(2 * epsilon(P, Q))


def test_a_lost_or_corrupt_ledger_rekeys_and_says_the_history_is_lost(tmp_path: Path) -> None:
    IndexPrivacy(tmp_path).pad("d", np.arange(5), np.arange(40), P, Q)
    ledger_file = next(tmp_path.glob("*.json"))
    for damage in ("unlink", "corrupt"):
        if damage == "unlink":
            ledger_file.unlink()
        else:
            ledger_file.write_text('{"device_id": "d", "key_fingerprint": "x", "ledger": {}}')
        led = IndexPrivacy(tmp_path).ledger("d")
        assert led.history_lost and led.key_epoch >= 2 and len(led.released) == 0


def test_ledger_json_round_trip_and_refusals() -> None:
    led = IndexLedger()
    pull = permanent_pad(KEY, EMPTY, np.empty(0, dtype=bool), np.arange(3), np.arange(9), 1.0, 0.2)
    led.record(pull, epsilon(1.0, 0.2))  # p = 1: ε = ∞
    back = IndexLedger.from_json(json.loads(json.dumps(led.to_json())))
    assert np.array_equal(back.released, led.released) and math.isinf(back.max_epsilon)
    assert back.summary()["max_item_epsilon"] == "inf"
    bad = led.to_json() | {"released": [3, 1]}
    with pytest.raises(ValueError):
        IndexLedger.from_json(bad)


def test_the_config_pads_a_devices_examples_and_reports_json_safe_status() -> None:
    ex = LocalExamples(history_len=5)
    ex.note_list(np.arange(20, 60), np.zeros(40, dtype=np.int64))
    for item in (21, 22, 23):
        ex.record(item, Action.EXPOSURE, 0)
    ex.record(22, Action.CLICK, 0)
    config = PrivacyConfig(P, Q, IndexPrivacy(public_pool=np.arange(5)))
    pull = config.pad("dev", ex, ex.decoy_pool())
    assert pull.pool_size == 45 and pull.outside_pool == 0
    assert np.array_equal(config.pad("dev", ex, ex.decoy_pool()).ids, pull.ids)
    status = config.status()
    json.dumps(status, allow_nan=False)  # what /v1/status serves
    assert status["devices"] == 1 and status["by_device"]["dev"]["items_released"] == 45
    assert status["epsilon_per_release"] == pytest.approx(epsilon(P, Q))
    assert not status["persisted"]
