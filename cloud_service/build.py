"""Builds the cloud's domain services from settings: the few `build_*` steps main runs."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from threadpoolctl import threadpool_limits

from cloud_service.auth import MIN_SECRET_BYTES, DeviceAuth, parse_keyring
from cloud_service.federated.defences import Defences
from cloud_service.federated.rounds import RoundConfig
from cloud_service.federated.secure_rounds import SecureConfig, SecureRounds
from cloud_service.recommender.retrieval import RetrievalConfig
from cloud_service.recommender.serving import OnlineRecommender
from cloud_service.registry.bundle import ServingBundle, load_bundle, load_federated_start
from cloud_service.registry.bundle_watch import BundleWatch
from cloud_service.registry.device_models import build_registries
from cloud_service.services.container import CloudServices, Readiness
from cloud_service.services.device_models import DeviceModelService
from cloud_service.services.events import EventService
from cloud_service.services.federated import FederatedService
from cloud_service.services.recommend import RecommendLimits, RecommendService
from cloud_service.services.secure_aggregation import SecureAggregationService
from cloud_service.settings import (
    CloudSettings,
    FederatedSettings,
    ModelSettings,
    RequestSettings,
    StoreSettings,
)
from cloud_service.store.base import StoreUnavailable
from cloud_service.store.breaker import Breaker
from cloud_service.store.federated_redis import FederatedStore
from cloud_service.store.federated_state import FederatedState
from cloud_service.store.keys import Keys
from cloud_service.store.memory import MemoryBudget
from cloud_service.store.redis_store import (
    RedisBudget,
    RedisClient,
    RedisEventLog,
    RedisSessions,
    RedisStore,
    build_redis,
)
from cloud_service.store.secagg_redis import SecAggRedis
from tandem_core.artifacts import ArtifactIntegrityError
from tandem_core.release import INTEREST_ENCODER, RERANKER, SHIFT_DETECTOR, VALUE_MODEL
from tandem_core.signing import Verifier, release_verifier

log = logging.getLogger(__name__)


def build_store(s: StoreSettings, client: RedisClient | None = None) -> RedisStore:
    client = client or build_redis(
        s.redis_url, socket_timeout_s=s.redis_socket_timeout_s, retries=s.redis_retries,
        cluster=s.redis_cluster,
    )  # fmt: skip
    return RedisStore(client, Keys(prefix=s.key_prefix), Breaker(open_s=s.redis_open_circuit_s))


def build_release_verifier(s: ModelSettings) -> Verifier:
    """The one public key artifacts must be signed by (a ReleaseKeyError without one, unless
    unsigned artifacts were allowed explicitly)."""
    return release_verifier(
        s.release_public_key, s.release_public_key_file, s.allow_unsigned, "CLOUD_ALLOW_UNSIGNED"
    )


def recommender_of(s: ModelSettings, bundle: ServingBundle) -> OnlineRecommender:
    retrieval = RetrievalConfig(
        n_embedding=s.n_embedding, n_cooccurrence=s.n_cooccurrence, n_popular=s.n_popular
    )
    return OnlineRecommender(
        bundle, retrieval, purchase_weight=s.purchase_weight, threads=s.onnx_threads
    )


def build_recommender(s: ModelSettings, verifier: Verifier | None = None) -> OnlineRecommender:
    # One BLAS thread per request thread, for the whole process: measured, retrieval's
    # 100k-row matmul took 6 ms with OpenBLAS threads fighting request threads for 2 cores,
    # 0.3 ms with one. Concurrency comes from serving several requests at once.
    threadpool_limits(limits=s.blas_threads)
    return recommender_of(s, load_bundle(s.bundle_dir, verifier or build_release_verifier(s)))


def build_bundle_watch(
    s: ModelSettings, verifier: Verifier, recommend: RecommendService
) -> BundleWatch:
    """Follows the bundle's `current`; a version that passes replaces the recommender whole."""

    def install(recommender: OnlineRecommender) -> None:
        recommend.recommender = recommender  # one reference assignment

    return BundleWatch(
        s.bundle_dir, verifier, current=lambda: recommend.recommender,
        build=lambda bundle: recommender_of(s, bundle), install=install,
        interval_s=s.model_poll_s,
    )  # fmt: skip


def build_round_config(fl: FederatedSettings) -> RoundConfig:
    return RoundConfig(
        devices_per_round=fl.devices_per_round, over_select=fl.over_select,
        quorum_share=fl.quorum_share, duration_s=fl.round_s,
        staleness_bound=fl.staleness_bound, staleness_decay=fl.staleness_decay,
        max_rows_per_device=fl.max_rows, max_samples=fl.max_samples,
        max_row_norm=fl.max_row_norm, max_update_norm=fl.max_update_norm,
        latest_max_age=fl.laavg_max_age,
    )  # fmt: skip


def build_defences(fl: FederatedSettings) -> Defences:
    return Defences(
        algorithm=fl.algorithm, clip_norm=fl.clip_norm, min_contributors=fl.min_contributors,
        trim=fl.trim, clip_median=fl.clip_median, clip_row_median=fl.clip_row_median,
        row_aggregator=fl.row_aggregator, max_row_step=fl.max_row_step,
        min_contributor_share=fl.min_contributor_share,
        max_correction=fl.max_correction or math.inf,  # the setting's 0 means uncapped
    )  # fmt: skip


def federated_dims(
    bundle_dir: Path, store: FederatedState
) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(row dim, dense shapes) of the federated model; writes version 0 if Redis has none."""
    rows, dense = load_federated_start(bundle_dir)
    store.initialise(rows, dense)
    return int(rows.shape[1]), {name: tuple(a.shape) for name, a in dense.items()}


def build_federated(
    s: CloudSettings, store: RedisStore, auth: DeviceAuth, n_items: int
) -> FederatedService | None:
    fl = FederatedStore(store.client, s.store.key_prefix, store.breaker)
    try:
        dim, shapes = federated_dims(s.models.bundle_dir, fl)
    except (StoreUnavailable, ArtifactIntegrityError) as exc:
        log.warning("federated learning off: %s", exc)
        return None  # serving goes on; Pull/Push answer UNAVAILABLE
    secure = SecureAggregationService(
        auth, SecAggRedis(store.client, s.store.key_prefix, store.breaker), fl
    )
    return FederatedService(
        auth, fl, n_items, dim, shapes, build_round_config(s.federated), secure
    )  # fmt: skip


def build_secure_rounds(
    fl: FederatedSettings, store: RedisStore, prefix: str, state: FederatedState, dim: int,
    shapes: dict[str, tuple[int, ...]],
) -> SecureRounds | None:  # fmt: skip
    """The aggregator's secure-aggregation phases, when the setting turns them on."""
    if not fl.secure_aggregation:
        return None
    cfg = SecureConfig(
        phase_s=fl.secagg_phase_s, row_clip=fl.secagg_row_clip, dense_clip=fl.secagg_dense_clip,
        count_cap=fl.secagg_count_cap, sample_cap=fl.secagg_sample_cap,
        max_correction=fl.max_correction or math.inf, min_contributors=fl.min_contributors,
        min_contributor_share=fl.min_contributor_share,
    )  # fmt: skip
    return SecureRounds(SecAggRedis(store.client, prefix, store.breaker), state, cfg, dim, shapes)


def build_limits(s: RequestSettings) -> RecommendLimits:
    return RecommendLimits(
        max_k=s.max_k, max_recent=s.max_recent, max_exclude=s.max_exclude,
        session_recent_len=s.session_recent_len, session_served_len=s.session_served_len,
        exclude_served=s.exclude_served,
    )  # fmt: skip


def build_recommend(
    s: CloudSettings, store: RedisStore, auth: DeviceAuth, recommender: OnlineRecommender
) -> RecommendService:
    budget = s.budget
    return RecommendService(
        auth=auth,
        recommender=recommender,
        sessions=RedisSessions(store, ttl_s=s.store.session_ttl_s),
        budget=RedisBudget(store, rate=budget.rate, burst=budget.burst),
        fallback_budget=MemoryBudget(
            rate=budget.rate * budget.local_share, burst=budget.burst * budget.local_share
        ),
        limits=build_limits(s.requests),
    )


class MissingAuthKey(ValueError):
    """No key to check device tokens with: the cloud refuses to serve (there is no default)."""


def build_auth(s: RequestSettings) -> DeviceAuth:
    """The keyring device tokens are checked against: CLOUD_AUTH_KEYS, else CLOUD_AUTH_SECRET."""
    ring = s.auth_keys.get_secret_value()
    if not ring and len(s.auth_secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
        raise MissingAuthKey(
            "CLOUD_AUTH_SECRET: set it (at least 16 random bytes) or CLOUD_AUTH_KEYS; "
            "device tokens have no default key"
        )
    auth = DeviceAuth(
        None if ring else s.auth_secret.get_secret_value().encode(),
        keys=parse_keyring(ring) if ring else None, skew_s=s.auth_clock_skew_s,
        max_lifetime_s=s.auth_max_token_lifetime_s, accept_legacy=s.auth_accept_legacy,
    )  # fmt: skip
    log.info("%s", auth.describe())
    return auth


def build_services(settings: CloudSettings, store: RedisStore | None = None) -> CloudServices:
    store = store or build_store(settings.store)
    auth = build_auth(settings.requests)
    models = settings.models
    verifier = build_release_verifier(models)
    recommender = build_recommender(models, verifier)
    n_items = recommender.bundle.n_items
    recommend = build_recommend(settings, store, auth, recommender)
    registries = build_registries(
        {RERANKER: models.device_model_dir, VALUE_MODEL: models.value_model_dir,
         SHIFT_DETECTOR: models.shift_detector_dir,
         INTEREST_ENCODER: models.interest_encoder_dir}, verifier,
        embedding_version=lambda: recommend.recommender.bundle.embedding_version,
    )  # fmt: skip
    return CloudServices(
        federated=build_federated(settings, store, auth, n_items),
        settings=settings,
        recommend=recommend,
        events=EventService(
            auth,
            RedisEventLog(
                store,
                maxlen=settings.store.events_stream_maxlen,
                dedup_ttl_s=settings.store.events_batch_ttl_s,
            ),
            n_items,
            max_events=settings.requests.max_events,
        ),
        device_models=DeviceModelService(auth, registries),
        readiness=Readiness(store),
        auth=auth,
        bundle_watch=build_bundle_watch(models, verifier, recommend),
    )
