"""The ε audit can pass and fail: permanent RR holds its claim, fresh draws and a status-following
memo do not; the memo survives calls and restarts; the accountant counts what was released."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from device_agent.trainer.index_privacy import IndexPrivacy
from tandem_core.federated.privacy import epsilon, membership_epsilon
from training.privacy.audit import (
    Following,
    Fresh,
    Mechanism,
    Permanent,
    Snapshot,
    Tally,
    attack,
    audit_key,
    cp_bounds,
    epsilon_of,
    main,
)

pytestmark = pytest.mark.unit
P, Q = 0.9, 0.1
EPS = epsilon(P, Q)


def fleet(n_devices: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per device: its pool (what the cloud sent), true ids from the start, ids true later."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_devices):
        pool = np.sort(rng.choice(5000, 200, replace=False))
        picked = rng.permutation(pool)[:40]
        out.append((pool, np.sort(picked[:20]), np.sort(picked[20:])))
    return out


def audit(mech: Mechanism, rounds: int, change_at: int | None = None) -> dict:
    """R pulls per device; with `change_at`, the late ids turn true from that round on."""
    tally = Tally()
    for d, (pool, early, late) in enumerate(fleet(200, seed=1)):
        seen = []
        for r in range(rounds):
            changed = change_at is not None and r >= change_at
            true = np.union1d(early, late) if changed else early
            true = true[np.isin(true, pool)]
            snap = Snapshot(float(r), true, true, pool)
            seen.append((mech.pool(snap), mech.pull(f"d{d}", snap)))
        tally.add_device(seen, true, odd=d % 2 == 1)
    scores = {n: np.concatenate(v) for n, v in tally.scores.items()}
    return attack(scores, np.concatenate(tally.labels), np.concatenate(tally.half), 0.05)


def permanent(public: np.ndarray | None = None) -> Permanent:
    return Permanent(P, Q, IndexPrivacy(public_pool=public, key_source=audit_key(0)))


def test_permanent_rr_holds_its_claim_over_many_pulls() -> None:
    mech = permanent()
    result = audit(mech, rounds=10)
    claimed, _ = mech.claimed()
    assert claimed == pytest.approx(EPS)  # one key: every released item cost ε once
    assert result["eps_lo"] <= claimed
    assert result["eps_hat"] == pytest.approx(membership_epsilon(P, Q), abs=0.3)


def test_fresh_rr_fails_its_per_pull_claim_over_many_pulls() -> None:
    mech = Fresh(P, Q, np.random.default_rng(0))
    assert audit(mech, rounds=1)["eps_lo"] <= EPS  # one pull: the claim holds
    assert audit(mech, rounds=10)["eps_lo"] > EPS  # ten: the noise averages away


def test_a_memo_following_the_status_gives_the_change_away_a_fixed_one_does_not() -> None:
    following = audit(Following(P, Q, np.empty(0, dtype=np.int64), seed=0), 6, change_at=3)
    assert following["eps_lo"] > EPS  # "not pulled, then pulled": only a newly true id does it
    mech = permanent()
    fixed = audit(mech, 6, change_at=3)
    assert fixed["eps_lo"] <= mech.claimed()[0] == pytest.approx(EPS)


def test_the_memo_is_stable_across_calls_and_a_restart_with_the_persisted_key(
    tmp_path: Path,
) -> None:
    pool, true = np.arange(100, 300), np.arange(100, 130)
    first = IndexPrivacy(tmp_path).pad("dev-1", true, pool, P, Q).ids
    again = IndexPrivacy(tmp_path).pad("dev-1", np.arange(200, 230), pool, P, Q).ids  # restart
    assert np.array_equal(first, again)  # the statuses changed; the released bits did not
    other = IndexPrivacy(tmp_path).pad("dev-2", true, pool, P, Q).ids
    assert not np.array_equal(first, other)  # another device, another key


def test_the_accountant_counts_releases_and_rekeys() -> None:
    index = IndexPrivacy(key_source=audit_key(3))
    pool, true = np.arange(50), np.arange(10)
    index.pad("d", true, pool, P, Q)
    index.pad("d", true, pool, P, Q)  # nothing new: nothing spent
    led = index.ledger("d")
    assert len(led.items) == 50 and led.max_epsilon == pytest.approx(EPS) and led.pulls == 2
    index.pad("d", true, np.arange(60), P, Q)  # ten new pool items cost ε each
    assert index.ledger("d").summary()["items_by_epsilon"] == {str(round(EPS, 4)): 60}
    index.rekey("d")
    index.pad("d", true, np.arange(20), P, Q)  # released again under the new key
    summary = index.ledger("d").summary()
    assert summary["rekeys"] == 1 and summary["max_item_epsilon"] == pytest.approx(2 * EPS)
    assert summary["items_by_epsilon"] == {str(round(EPS, 4)): 40, str(round(2 * EPS, 4)): 20}


def test_clopper_pearson_and_the_epsilon_of_rates() -> None:
    lo, hi = cp_bounds(np.array([0, 10]), 10, 0.05)
    assert lo[0] == 0.0 and hi[0] == pytest.approx(1 - 0.025**0.1)
    assert hi[1] == 1.0 and lo[1] == pytest.approx(0.025**0.1)
    eps = epsilon_of(np.array([0.9, 0.0, 0.5]), np.array([0.1, 0.0, 0.0]))
    assert eps[0] == pytest.approx(math.log(9)) and eps[1] == 0.0 and math.isinf(eps[2])


@pytest.mark.slow
def test_the_audit_command_runs_on_the_tiny_world(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scale", "tiny", "--rounds", "2", "--seeds", "0", "--public-pool", "50"]) == 0
    out = capsys.readouterr().out
    assert "| dynamic | permanent RR, bits fixed at release | 2 |" in out
    assert "true ids outside what the cloud sent" in out
