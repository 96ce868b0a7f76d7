"""Recommend: budget, session, retrieval + ranking, embedding rows; degrades when Redis is down.

The rows sent with a list are read from the serving bundle in process: the bundle holds them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from cloud_service import metrics
from cloud_service.auth import DeviceAuth
from cloud_service.domain import Action, Behavior, RankedList, RecommendQuery, Session
from cloud_service.errors import BudgetExhausted
from cloud_service.recommender.serving import OnlineRecommender, Scored
from cloud_service.store.base import RequestBudget, SessionStore, StoreUnavailable
from cloud_service.validation import check_query


@dataclass(frozen=True)
class RecommendLimits:
    """What one request may ask and what a session keeps; built from `RequestSettings` (whose
    defaults and reasons are the ones that count)."""

    max_k: int
    max_recent: int
    max_exclude: int
    session_recent_len: int
    session_served_len: int
    exclude_served: bool  # exclude everything sent before, not only what the device showed


def merge_recent(stored: list[Behavior], new: tuple[Behavior, ...], keep: int) -> list[Behavior]:
    """Union of the stored and the reported behaviour, ordered by time, last `keep` kept."""
    merged = {(b.item_id, b.action, b.timestamp_ms): b for b in [*stored, *new]}
    return sorted(merged.values(), key=lambda b: b.timestamp_ms)[-keep:]


class RecommendService:
    def __init__(
        self,
        auth: DeviceAuth,
        recommender: OnlineRecommender,
        sessions: SessionStore,
        budget: RequestBudget,
        fallback_budget: RequestBudget,
        limits: RecommendLimits,
    ) -> None:
        self.auth, self.recommender = auth, recommender
        self.sessions, self.budget, self.fallback_budget = sessions, budget, fallback_budget
        self.limits = limits

    def _admit(self) -> None:
        try:
            decision = self.budget.take()
        except StoreUnavailable:
            decision = self.fallback_budget.take()  # this replica's share, until Redis returns
        metrics.BUDGET.labels("allowed" if decision.allowed else "rejected").inc()
        if not decision.allowed:
            raise BudgetExhausted(decision.retry_after_s)

    def _load(self, device_id: str) -> tuple[Session, bool]:
        try:
            return self.sessions.load(device_id) or Session(), False
        except StoreUnavailable:
            metrics.DEGRADED.inc()
            return Session(), True

    def recommend(self, q: RecommendQuery, token: str | None) -> RankedList:
        self.auth.verify(q.device_id, token)
        # one reference for the whole call: a hot swap never mixes two bundles in one answer
        recommender = self.recommender
        bundle = recommender.bundle
        lim = self.limits
        limits = {"recent": lim.max_recent, "exclude": lim.max_exclude}
        check_query(q, bundle.n_items, bundle.dim, lim.max_k, limits)
        self._admit()  # after validation: bad input spends no budget
        if q.private:
            return self._recommend_private(q, recommender)
        session, degraded = self._load(q.device_id)
        recent = merge_recent(session.recent, q.recent, lim.session_recent_len)
        clicked = np.array(
            [b.item_id for b in recent if b.action != Action.EXPOSURE], dtype=np.int64
        )
        served = session.served if lim.exclude_served else []
        shown = [*q.exclude, *served, *(b.item_id for b in recent)]
        exclude = np.unique(np.array(shown, dtype=np.int64))
        # an interest vector from another embedding version lives in another space: ignore it
        interest = q.interest if q.model_version in ("", bundle.embedding_version) else None
        if interest is None and session.interest_version == bundle.embedding_version:
            interest = session.interest
        if len(clicked) == 0 and interest is None:
            scored = recommender.popular(exclude, q.k)
        else:
            scored = recommender.recommend(clicked, exclude, interest, q.k)
        if not degraded:
            session.recent = recent
            # what was sent is read only to exclude it: off, the session carries none of it
            sent = [*session.served, *scored.item_ids.tolist()] if lim.exclude_served else []
            session.served = sent[max(0, len(sent) - lim.session_served_len) :]  # [-0:] is all
            if q.interest is not None and interest is q.interest:
                session.interest, session.interest_version = q.interest, bundle.embedding_version
            try:
                self.sessions.save(q.device_id, session)
            except StoreUnavailable:
                degraded = True
        return ranked_list(scored, recommender, degraded)

    def _recommend_private(self, q: RecommendQuery, recommender: OnlineRecommender) -> RankedList:
        """No behaviour in, none kept: rank with the pseudo-history, retrieve by interest,
        exclude what the device sent (and, with `exclude_served`, what was served before).
        The session keeps at most the served ids; behaviour or an interest that a default-mode
        request stored before is dropped."""
        bundle, lim = recommender.bundle, self.limits
        try:
            stored, degraded = self.sessions.load(q.device_id), False
        except StoreUnavailable:
            metrics.DEGRADED.inc()
            stored, degraded = None, True
        served = stored.served if stored is not None and lim.exclude_served else []
        exclude = np.unique(np.array([*q.exclude, *served], dtype=np.int64))
        # vectors of another embedding version live in another space: not used
        current = q.model_version in ("", bundle.embedding_version)
        interest = q.interest if current else None
        rows, weights = q.interest_set, q.interest_weights
        if not current or rows is None or weights is None:
            rows, weights = np.empty((0, bundle.dim), np.float32), np.empty(0, np.float32)
        if len(rows) == 0 and interest is None:
            scored = recommender.popular(exclude, q.k)
        else:
            scored = recommender.recommend_private(rows, weights, interest, exclude, q.k)
        sent = [*served, *scored.item_ids.tolist()] if lim.exclude_served else []
        if not degraded and (stored is not None or sent):
            kept = Session(served=sent[max(0, len(sent) - lim.session_served_len) :])
            try:
                self.sessions.save(q.device_id, kept)
            except StoreUnavailable:
                degraded = True
        return ranked_list(scored, recommender, degraded)


def ranked_list(scored: Scored, recommender: OnlineRecommender, degraded: bool) -> RankedList:
    """The answer: the scored items with their categories and rows, under the bundle's versions."""
    bundle = recommender.bundle
    return RankedList(
        item_ids=scored.item_ids,
        category_ids=bundle.item_category[scored.item_ids],
        ctr=scored.ctr, ctcvr=scored.ctcvr, score=scored.score,
        rows=bundle.item_rows[scored.item_ids],
        model_version=bundle.version, embedding_version=bundle.embedding_version,
        request_id=uuid.uuid4().hex, degraded=degraded,
    )  # fmt: skip
