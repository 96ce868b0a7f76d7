"""Index privacy: pad a device's true item ids with decoys by randomized response, report ε.

Each true id is kept with probability p; each id of a stated decoy pool (not already true) is
added with probability q. For any single id, seeing it in the padded set is p/q times likelier
when it is true (and (1−p)/(1−q) when absent), so the set is ε-locally private per item with
ε = ln(p(1−q) / (q(1−p))) (Warner, JASA 1965; the federated-submodel form of Niu et al.,
MobiCom 2020). p = 1 keeps every true id: ε = ∞, the padding only hides how many there are.

The push covers exactly the pulled set (`cover_pulled`: decoys and dropped true ids get zero
deltas and zero counts), so the row set of a push adds nothing to what the pull revealed. The
per-row counts do: a zero count marks a decoy, and FedSubAvg needs the counts to weight rows.
So the padding hides the true set from everything that sees pulls or row sets (serving, logs,
caches), not from the aggregator that reads the counts. Secure aggregation (pairwise masks,
Bonawitz et al., CCS 2017) is the step that would hide per-device counts too; it is not built.
"""

from __future__ import annotations

import math

import numpy as np


def epsilon(keep_prob: float, decoy_prob: float) -> float:
    """ε of randomized-response padding; ∞ when p = 1 (true ids always kept) or q = 0."""
    check(keep_prob, decoy_prob)
    if keep_prob == 1.0 or decoy_prob == 0.0:
        return math.inf
    return math.log(keep_prob * (1 - decoy_prob) / (decoy_prob * (1 - keep_prob)))


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
