"""Index privacy: pad a device's true item ids with decoys by randomized response, report ε.

Each true id is kept with probability p; each id of a stated decoy pool (not already true) is
added with probability q (Warner, JASA 1965; the federated-submodel form of Niu et al., MobiCom
2020). Seeing an id pulled is p/q times likelier when it is true, seeing it absent (1−q)/(1−p)
times likelier when it is not, so one release of one id is ε₁-private with
ε₁ = max(ln(p/q), ln((1−q)/(1−p))) (`membership_epsilon`, what an audit can measure). The ε a push
reports and the cloud checks, `epsilon(p, q)` = ln(p(1−q) / (q(1−p))), is the sum of the two
log-ratios: the bound for a true id swapped with a decoy, and an upper bound of ε₁. p = 1 keeps
every true id: ε = ∞, the padding only hides how many there are.

The push covers exactly the pulled set (`cover_pulled`: decoys and dropped true ids get zero
deltas and zero counts), so the row set of a push adds nothing to what the pull revealed. The
per-row counts do: a zero count marks a decoy, and FedSubAvg needs the counts to weight rows.
So the padding hides the true set from everything that sees pulls or row sets (serving, logs,
caches), not from the aggregator that reads the counts. Secure aggregation (pairwise masks,
Bonawitz et al., CCS 2017; tandem_core/federated/secagg) is what hides per-device counts too.

Fresh draws every pull (`pad_ids`) compose: after R pulls of the same true set an item costs R·ε.
Permanent randomized response (RAPPOR, Erlingsson et al., CCS 2014) memoises each decision: the
uniform of an item is HMAC-SHA256(device key, item) (`item_uniforms`), and its pulled bit is
fixed at its first release under the key, from its status then (`permanent_pad`): true and
u < p, or not true and u < q. The bit never changes afterwards, whatever the item's status does,
because a memoised output that changes reveals when the status changed (Naor and Vexler, FORC
2020): following the status (u < p when true, u < q when not) would move an item from "not
pulled" to "pulled" exactly when it became true, w.p. p − q, which no never-true item can do.
So one key costs each released item ε once over the device's lifetime; a new key (a lost key,
or a deliberate re-key) releases the items again and costs another ε each
(tandem_core/federated/accountant.py keeps the count). The price of freezing: a true id whose
bit was fixed as "not pulled" (released as not true, or u ≥ p) is left out of training.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

import numpy as np

MEMO_CONTEXT = b"tandem/index-rr/v1:"  # domain separation of the key's HMAC


def epsilon(keep_prob: float, decoy_prob: float) -> float:
    """ε of randomized-response padding; ∞ when p = 1 (true ids always kept) or q = 0."""
    check(keep_prob, decoy_prob)
    if keep_prob == 1.0 or decoy_prob == 0.0:
        return math.inf
    return math.log(keep_prob * (1 - decoy_prob) / (decoy_prob * (1 - keep_prob)))


def membership_epsilon(keep_prob: float, decoy_prob: float) -> float:
    """Tight ε of one release of one item (true vs not): max(ln(p/q), ln((1−q)/(1−p)))."""
    check(keep_prob, decoy_prob)
    if keep_prob == 1.0 or decoy_prob == 0.0:
        return math.inf
    return max(math.log(keep_prob / decoy_prob), math.log((1 - decoy_prob) / (1 - keep_prob)))


def check(keep_prob: float, decoy_prob: float) -> None:
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError("keep_prob must be in (0, 1]")
    if not 0.0 <= decoy_prob < 1.0:
        raise ValueError("decoy_prob must be in [0, 1)")
    if decoy_prob >= keep_prob:
        raise ValueError("decoy_prob must be below keep_prob, or the padding carries no signal")


def pad_ids(
    true_ids: np.ndarray, pool: np.ndarray, keep_prob: float, decoy_prob: float,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """The padded id set to pull: kept true ids ∪ pool ids drawn with probability q, sorted."""
    check(keep_prob, decoy_prob)
    true = np.unique(np.asarray(true_ids, dtype=np.int64))
    kept = true[rng.random(len(true)) < keep_prob]
    candidates = np.setdiff1d(np.unique(np.asarray(pool, dtype=np.int64)), true)
    decoys = candidates[rng.random(len(candidates)) < decoy_prob]
    return np.union1d(kept, decoys)


def cover_pulled(
    pulled: np.ndarray, trained: np.ndarray, deltas: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The push for every pulled row: trained rows keep their delta and count, the others
    (decoys, and true ids not kept) get zeros — the push names exactly the pulled set."""
    pulled = np.asarray(pulled, dtype=np.int64)
    out_d = np.zeros((len(pulled), deltas.shape[1]), dtype=np.float32)
    out_c = np.zeros(len(pulled), dtype=np.int64)
    pos = {int(i): k for k, i in enumerate(pulled.tolist())}
    for item, d, c in zip(np.asarray(trained).tolist(), deltas, counts, strict=True):
        if item not in pos:
            raise ValueError(f"row {item} was trained but not pulled")
        out_d[pos[item]], out_c[pos[item]] = d, c
    return pulled, out_d, out_c


def item_uniforms(key: bytes, ids: np.ndarray) -> np.ndarray:
    """u = HMAC-SHA256(key, context ‖ id as 8 signed big-endian bytes), its first 8 bytes read as
    a uniform in [0, 1): the same key and id always give the same draw."""
    if len(key) < 16:
        raise ValueError("the memo key must have at least 16 bytes")
    out = np.empty(len(ids), dtype=np.float64)
    for k, item in enumerate(np.asarray(ids, dtype=np.int64).tolist()):
        mac = hmac.new(key, MEMO_CONTEXT + item.to_bytes(8, "big", signed=True), hashlib.sha256)
        out[k] = int.from_bytes(mac.digest()[:8], "big") / 2.0**64
    return out


@dataclass(frozen=True)
class PermanentPull:
    """One pull under permanent randomized response, and what it newly released."""

    ids: np.ndarray  # the padded set to pull, sorted
    new_ids: np.ndarray  # pool items released for the first time under this key (each costs ε)
    new_pulled: np.ndarray  # their fixed bits
    outside_pool: int  # true ids not in the pool: never pulled (a lone one would be revealed)
    withheld: int  # true ids in the pool whose fixed bit says "not pulled": not trained


def permanent_pad(
    key: bytes, released: np.ndarray, released_pulled: np.ndarray, true_ids: np.ndarray,
    pool: np.ndarray, keep_prob: float, decoy_prob: float,
) -> PermanentPull:  # fmt: skip
    """The pull of `pool` items whose bit is 1: bits already `released` (sorted ids, with their
    bits) stay as they are; a new pool item's bit is u < p if it is true now, u < q if not.
    The pool must be public (items the cloud sent ∪ a public set): only pool items are pulled."""
    check(keep_prob, decoy_prob)
    true = np.unique(np.asarray(true_ids, dtype=np.int64))
    pool = np.unique(np.asarray(pool, dtype=np.int64))
    released = np.asarray(released, dtype=np.int64)
    known = np.isin(pool, released)
    old = pool[known]
    old_bits = np.asarray(released_pulled, dtype=bool)[np.searchsorted(released, old)]
    new = pool[~known]
    thresholds = np.where(np.isin(new, true), keep_prob, decoy_prob)
    new_bits = item_uniforms(key, new) < thresholds
    ids = np.union1d(old[old_bits], new[new_bits])
    in_pool = true[np.isin(true, pool)]
    return PermanentPull(
        ids, new, new_bits, outside_pool=len(true) - len(in_pool),
        withheld=int(np.count_nonzero(~np.isin(in_pool, ids))),
    )  # fmt: skip
