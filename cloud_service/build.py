"""Builds the cloud's domain services from settings: the few `build_*` steps main runs."""

from __future__ import annotations

import logging

import redis
from threadpoolctl import threadpool_limits

from cloud_service.auth import DeviceAuth
from cloud_service.federated.build import build_round_config, federated_dims
from cloud_service.recommender.retrieval import RetrievalConfig
from cloud_service.recommender.serving import OnlineRecommender
from cloud_service.registry.bundle import ArtifactIntegrityError, load_bundle
from cloud_service.registry.device_models import DeviceModelRegistry
from cloud_service.services.container import CloudServices, Readiness
from cloud_service.services.device_models import DeviceModelService
from cloud_service.services.events import EventService
from cloud_service.services.federated import FederatedService
from cloud_service.services.recommend import RecommendLimits, RecommendService
from cloud_service.services.rows import RowService
from cloud_service.settings import CloudSettings
from cloud_service.store.base import StoreUnavailable
from cloud_service.store.breaker import Breaker
from cloud_service.store.federated_redis import FederatedStore
from cloud_service.store.keys import Keys
from cloud_service.store.memory import MemoryBudget
from cloud_service.store.redis_store import (
    RedisBudget,
    RedisEventLog,
    RedisRowCache,
    RedisSessions,
    RedisStore,
    build_redis,
)

log = logging.getLogger(__name__)


def build_store(settings: CloudSettings, client: redis.Redis | None = None) -> RedisStore:
    client = client or build_redis(
        settings.redis_url, settings.redis_socket_timeout_s, settings.redis_retries
    )
    return RedisStore(client, Keys(settings.key_prefix), Breaker(settings.redis_open_circuit_s))


def build_recommender(settings: CloudSettings) -> OnlineRecommender:
    retrieval = RetrievalConfig(
        n_embedding=settings.n_embedding,
        n_cooccurrence=settings.n_cooccurrence,
        n_popular=settings.n_popular,
    )
    # One BLAS thread per request thread, for the whole process: measured, retrieval's
    # 100k-row matmul took 6 ms with OpenBLAS threads fighting request threads for 2 cores,
    # 0.3 ms with one. Concurrency comes from serving several requests at once.
    threadpool_limits(limits=settings.blas_threads)
    bundle = load_bundle(settings.bundle_dir)
    return OnlineRecommender(bundle, retrieval, settings.purchase_weight, settings.onnx_threads)


def build_federated(
    s: CloudSettings, store: RedisStore, auth: DeviceAuth, n_items: int
) -> FederatedService | None:
    fl = FederatedStore(store.client, s.key_prefix, store.breaker)
    try:
        dim, shapes = federated_dims(s, fl)
    except (StoreUnavailable, ArtifactIntegrityError) as exc:
        log.warning("federated learning off: %s", exc)
        return None  # serving goes on; Pull/Push answer UNAVAILABLE
    return FederatedService(auth, fl, n_items, dim, shapes, build_round_config(s))


def build_services(settings: CloudSettings, store: RedisStore | None = None) -> CloudServices:
    store = store or build_store(settings)
    auth = DeviceAuth(settings.auth_secret.get_secret_value().encode())
    recommender = build_recommender(settings)
    s = settings
    recommend = RecommendService(
        auth=auth,
        recommender=recommender,
        rows=RowService(
            recommender.bundle,
            RedisRowCache(store, s.embedding_shards, s.embedding_batch, s.embedding_ttl_s),
        ),
        sessions=RedisSessions(store, s.session_ttl_s),
        budget=RedisBudget(store, s.budget_rate, s.budget_burst),
        fallback_budget=MemoryBudget(
            s.budget_rate * s.budget_local_share, s.budget_burst * s.budget_local_share
        ),
        limits=RecommendLimits(
            s.max_k,
            s.max_recent,
            s.max_exclude,
            s.session_recent_len,
            s.session_served_len,
            s.exclude_served,
        ),
    )
    return CloudServices(
        federated=build_federated(settings, store, auth, recommender.bundle.n_items),
        settings=settings,
        recommend=recommend,
        events=EventService(
            auth,
            RedisEventLog(store, s.events_stream_maxlen),
            recommender.bundle.n_items,
            s.max_events,
        ),
        device_models=DeviceModelService(auth, DeviceModelRegistry(s.device_model_dir)),
        readiness=Readiness(store),
        auth=auth,
    )
