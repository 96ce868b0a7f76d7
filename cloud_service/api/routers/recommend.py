"""POST /v1/recommend: the ranked list for one device."""

from __future__ import annotations

from fastapi import APIRouter

from cloud_service.api.handling import Token, observed
from cloud_service.api.schemas import RecommendBody, RecommendOut
from cloud_service.api.serde import query_from_body, ranked_to_body
from cloud_service.services.container import CloudServices


def router(services: CloudServices) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/recommend", response_model=RecommendOut)
    def recommend(body: RecommendBody, x_device_token: Token = None) -> RecommendOut:
        with observed("Recommend"):
            ranked = services.recommend.recommend(query_from_body(body), x_device_token)
            return ranked_to_body(ranked)

    return api
