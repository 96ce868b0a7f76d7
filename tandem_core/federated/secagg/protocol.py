"""Secure aggregation of sparse submodel updates: the device's and the server's state machines.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017,
the honest-but-curious variant: AdvertiseKeys → ShareKeys → MaskedInputCollection → Unmasking
(no ConsistencyCheck round, no signatures). Each device u advertises two X25519 keys, sends every
peer a t-of-n Shamir share of its mask key s_sk and of a fresh self-mask seed b_u (sealed with
AES-GCM), uploads y_u = x_u + PRG(b_u) + Σ_v ±PRG(s_uv), and finally reveals, per peer, the
share of b (if the peer's input arrived) or of s_sk (if it dropped), never both. The pairwise
masks of surviving pairs cancel in the sum; the server rebuilds b for every survivor and the
pairwise masks that dropped devices left behind, and obtains exactly Σ x_u mod 2^32.

Sparse submodels. Device u's input covers only its row set P_u (its padded pull) plus the dense
segment. The pairwise mask of u and v covers the rows of I_uv = P_u ∩ P_v plus the dense segment;
the self mask covers all of P_u plus the dense segment. The server already sees every P_u (it
served the pulls), so masking rows outside the intersections would hide nothing more, and
masking a common union instead would cost |∪ P| / |P_u| times the bytes. What the server learns
is each row's sum over the survivors holding it (and, from the pulls, who holds it): a row held
by a single survivor is that device's value in the clear; `SecAggResult.holders` says how many
inputs each row sum has, and the caller must not rely on a sum of fewer than it can accept.

Trust: the server is honest-but-curious. It could, if it deviated, shrink the intersections it
sends so that some rows carry only the self mask, or report different survivor sets to different
devices; the client checks what it can (one request never reveals both secrets of a peer, and a
later request cannot contradict an earlier one), not the intersections themselves.

Shamir x coordinate of a device: its 1-based index in the roster U1 sorted by device id. The
threshold t must exceed |U1| / 2: with t ≤ |U1| / 2 two disjoint groups of t devices could be
asked for b_u and for s_sk_u, giving the server both secrets of u.
"""

from __future__ import annotations

from tandem_core.federated.secagg.client import SecAggClient
from tandem_core.federated.secagg.errors import InvalidMessage, RoundAborted, WrongStage
from tandem_core.federated.secagg.messages import (
    EncryptedShare,
    KeyAdvert,
    MaskedInput,
    SecAggParams,
    UnmaskShares,
)
from tandem_core.federated.secagg.server import SecAggResult, SecAggServer

__all__ = [
    "EncryptedShare",
    "InvalidMessage",
    "KeyAdvert",
    "MaskedInput",
    "RoundAborted",
    "SecAggClient",
    "SecAggParams",
    "SecAggResult",
    "SecAggServer",
    "UnmaskShares",
    "WrongStage",
]
