"""PullSubmodel and PushUpdate: the submodel parameter server both transports call."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cloud_service.auth import DeviceAuth
from cloud_service.errors import InvalidArgument, Unavailable
from cloud_service.federated.rounds import RoundConfig, staleness_weight
from cloud_service.services.secure_aggregation import SecureAggregationService
from cloud_service.store.base import StoreUnavailable
from cloud_service.store.federated_state import FederatedState, RoundContributions, RoundInfo
from tandem_core.federated import update as update_codec
from tandem_core.federated.secure_update import SecureParams
from tandem_core.federated.update import InvalidUpdate, ModelUpdate, UpdateLimits


@dataclass(frozen=True)
class Submodel:
    item_ids: np.ndarray
    rows: np.ndarray
    dense: dict[str, np.ndarray]
    version: int
    round: RoundInfo | None
    selected: bool
    secure: SecureParams | None = None  # the round runs secure aggregation


@dataclass(frozen=True)
class PushReceipt:
    accepted: bool
    reason: str  # accepted | duplicate | stale | closed | late | not_selected | already_pushed
    #            | secure_round (the round takes masked inputs through SecureAggregate only)
    entry_id: str


class FederatedService:
    def __init__(
        self,
        auth: DeviceAuth,
        store: FederatedState,
        n_items: int,
        dim: int,
        dense_shapes: dict[str, tuple[int, ...]],
        cfg: RoundConfig,
        secure: SecureAggregationService | None = None,
    ) -> None:
        self.auth, self.store, self.cfg, self.secure = auth, store, cfg, secure
        self.n_items, self.dim, self.dense_shapes = n_items, dim, dense_shapes
        self.limits = UpdateLimits(
            n_items, dim, dense_shapes, cfg.max_rows_per_device, cfg.max_samples,
            cfg.max_row_norm, cfg.max_update_norm,
        )  # fmt: skip

    def pull(
        self, device_id: str, round_id: str, item_ids: list[int], token: str | None
    ) -> Submodel:
        """Only the rows asked for (the device's ids, decoys included) and the dense layers.

        A bare check-in (no ids, no round) gets the round and the version only: the dense
        layers are most of a submodel's bytes and a device needs them only once selected."""
        self.auth.verify(device_id, token)
        ids = np.asarray(item_ids, dtype=np.int64)
        if len(ids) > self.cfg.max_rows_per_device:
            raise InvalidArgument(f"more than {self.cfg.max_rows_per_device} item ids")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n_items):
            raise InvalidArgument(f"item_ids outside the catalogue of {self.n_items}")
        try:
            self.store.register(device_id)
            if round_id or len(ids):
                rows, dense, version = self.store.snapshot(ids.tolist(), self.dim)
            else:
                rows, dense, version = np.zeros((0, self.dim), np.float32), {}, self.store.version()
            current = self.store.current_round()
        except StoreUnavailable as exc:
            raise Unavailable("federated state unavailable; retry later") from exc
        open_round = current if current is not None and current.state == "open" else None
        if round_id and (open_round is None or open_round.round_id != round_id):
            raise InvalidArgument(f"round {round_id!r} is not open")
        selected = open_round is not None and device_id in open_round.selected
        params = None
        if open_round is not None and self.secure is not None:
            params = self.secure.round_params(open_round.round_id)
            if params is not None and selected and round_id and len(ids):
                self.secure.record_pull(device_id, round_id, ids)
        return Submodel(ids, rows, dense, version, open_round, selected, params)

    def push(self, push: ModelUpdate, token: str | None) -> PushReceipt:
        """Validated, then appended to the durable stream; acknowledged only once stored."""
        self.auth.verify(push.device_id, token)
        try:
            update_codec.check(push, self.limits)
        except InvalidUpdate as exc:
            raise InvalidArgument(str(exc)) from None
        # a push without rows is a dense-only update (accepted); stored as (0, dim) rows, so the
        # aggregator's row math sees the model's width whatever empty shape the device sent
        push = replace(
            push, row_deltas=push.row_deltas.reshape(len(push.item_ids), self.limits.dim)
        )
        if self.secure is not None and self.secure.round_params(push.round_id) is not None:
            return PushReceipt(False, "secure_round", "")  # only masked inputs count in it
        try:
            if staleness_weight(self.store.version(), push.base_version, self.cfg) is None:
                return PushReceipt(False, "stale", "")
            payload = update_codec.encode(push)
            outcome, entry = self.store.push(push.update_id, push.round_id, push.device_id, payload)
        except StoreUnavailable as exc:
            raise Unavailable("update stream unavailable; not stored, retry") from exc
        return PushReceipt(outcome in ("accepted", "duplicate"), outcome, entry)

    def contributions(self, rounds: int) -> list[RoundContributions]:
        """The latest rounds' contribution scores, newest first (the aggregator records them)."""
        try:
            return self.store.contributions(rounds)
        except StoreUnavailable as exc:
            raise Unavailable("federated state unavailable; retry later") from exc
