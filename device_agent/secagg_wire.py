"""SecureAggregate messages: the device's stage as the contract's request, the reply as types."""

from __future__ import annotations

import numpy as np

from device_agent.ports import SecAggReply, SecAggStage
from protos.tandem.v1 import tandem_pb2 as pb
from tandem_core.federated.secagg import EncryptedShare, KeyAdvert, MaskedInput, UnmaskShares


def _share_bytes(x: int) -> bytes:
    return x.to_bytes(max(1, (x.bit_length() + 7) // 8), "big")


def secagg_request(
    device_id: str, round_id: str, stage: SecAggStage, base_version: int = 0
) -> pb.SecAggRequest:
    req = pb.SecAggRequest(device_id=device_id, round_id=round_id)
    if isinstance(stage, KeyAdvert):
        req.keys.CopyFrom(pb.SecAggKeys(c_pk=stage.c_pk, s_pk=stage.s_pk))
    elif isinstance(stage, list):
        shares = [pb.SecAggShare(peer=s.receiver, ciphertext=s.ciphertext) for s in stage]
        req.shares.CopyFrom(pb.SecAggShares(shares=sorted(shares, key=lambda s: s.peer)))
    elif isinstance(stage, MaskedInput):
        rows = np.ascontiguousarray(stage.rows, "<u4")
        req.masked.CopyFrom(pb.SecAggMasked(
            rows=rows.shape[0], cols=rows.shape[1] if rows.ndim == 2 else 0,
            row_data=rows.tobytes(), dense_data=np.ascontiguousarray(stage.dense, "<u4").tobytes(),
            base_version=base_version,
        ))  # fmt: skip
    elif isinstance(stage, UnmaskShares):
        req.unmask.CopyFrom(pb.SecAggUnmask(
            s_shares={k: _share_bytes(v) for k, v in stage.s_shares.items()},
            b_shares={k: _share_bytes(v) for k, v in stage.b_shares.items()},
        ))  # fmt: skip
    return req


def secagg_reply(device_id: str, r: pb.SecAggResponse) -> SecAggReply:
    return SecAggReply(
        r.phase, r.accepted, r.reason,
        roster=[KeyAdvert(e.device_id, e.c_pk, e.s_pk) for e in r.roster],
        inbox=[EncryptedShare(s.peer, device_id, s.ciphertext) for s in r.inbox],
        intersections={i.peer: np.asarray(i.item_ids, np.int64) for i in r.intersections},
        survivors=list(r.survivors), dropped=list(r.dropped),
    )  # fmt: skip
