"""The private Recommend: DIN over rows equals DIN over ids, the encoder's ONNX equals torch, the
cloud refuses bad private requests and stores no behaviour, the agent sends no event window."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cloud_service import errors
from cloud_service.api.schemas import RecommendBody
from cloud_service.api.serde import query_from_body
from cloud_service.auth import DeviceAuth
from cloud_service.domain import Action, Behavior, RecommendQuery, Session
from cloud_service.recommender.retrieval import RetrievalConfig
from cloud_service.recommender.serving import OnlineRecommender
from cloud_service.registry.bundle import load_bundle
from cloud_service.services.recommend import RecommendLimits, RecommendService
from cloud_service.store.memory import MemoryBudget, MemorySessions
from cloud_service.validation import check_query
from cloud_service.wire import query_from_proto
from device_agent.build import build_pacer, build_session_factory
from device_agent.inference.interest_encoder import OnnxInterestEncoder, private_interest
from device_agent.inference.models import RerankerSlot
from device_agent.ports import CloudList, PrivateInterest
from device_agent.service import AgentService, AppEvent
from device_agent.session.registry import SessionRegistry
from device_agent.settings import DeviceSettings, FeedSettings, PacingSettings
from protos.tandem.v1 import tandem_pb2 as pb
from protos.vectors import matrix_to_proto
from simulator.logs import Impressions
from tandem_core.models.din import DinConfig, DinRanker
from training.private_mode.encoder import EncoderConfig, InterestEncoder
from training.private_mode.export import export_encoder
from training.ranker.bundle import write_bundle

pytestmark = pytest.mark.unit
N_ITEMS, N_CATS, DIM = 300, 6, 40
LIMITS = {"recent": 10, "exclude": 10}


def ranker(seed: int = 0) -> DinRanker:
    """A random DIN with every term non-trivial (biases, towers, categories)."""
    torch.manual_seed(seed)
    model = DinRanker(DinConfig(N_ITEMS, N_CATS), torch.arange(N_ITEMS) % N_CATS).eval()
    with torch.no_grad():
        model.item_bias.weight.normal_(0, 0.5)
        model.category_embedding.weight.normal_(0, 0.3)
    return model


def impressions() -> Impressions:
    rng = np.random.default_rng(0)
    n = 2000
    return Impressions(
        session=rng.integers(0, 100, n), user=rng.integers(0, 50, n),
        step=rng.integers(0, 10, n), position=rng.integers(0, 4, n),
        item=rng.integers(0, N_ITEMS, n), category=rng.integers(0, N_CATS, n),
        click=rng.random(n) < 0.3, purchase=rng.random(n) < 0.05, timestamp=np.arange(n),
        intent=rng.integers(0, N_CATS, n),
    )  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[DinRanker, OnlineRecommender]:
    model = ranker()
    out = tmp_path_factory.mktemp("bundle")
    write_bundle(out, model, impressions(), "din-test", "emb-test", history_len=10)
    return model, OnlineRecommender(load_bundle(out), RetrievalConfig())


def encoder(dim: int = DIM, seed: int = 1) -> InterestEncoder:
    torch.manual_seed(seed)
    enc = InterestEncoder(EncoderConfig(dim=dim, history_len=10, n_interests=4)).eval()
    with torch.no_grad():  # the correction starts at zero: make every layer matter
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return enc


def onnx_encoder(enc: InterestEncoder, tmp: Path) -> bytes:
    export_encoder(enc, tmp / "encoder.onnx")
    return (tmp / "encoder.onnx").read_bytes()


def test_the_rows_entry_is_the_id_entry_on_the_real_rows() -> None:
    model = ranker()
    history = torch.randint(0, N_ITEMS, (16, 12))
    history[:, :5] = -1  # left padding
    history[3] = -1  # no behaviour at all
    candidates = torch.randint(0, N_ITEMS, (16, 7))
    with torch.no_grad():
        rows, mask = model.embed(history)
        by_rows = model.logits_from_rows(rows, mask, candidates)
        by_ids = model.logits(history, candidates)
    for a, b in zip(by_rows, by_ids, strict=True):
        assert torch.equal(a, b)


def test_the_private_onnx_ranks_real_rows_as_the_id_onnx(
    served: tuple[DinRanker, OnlineRecommender],
) -> None:
    _, online = served
    assert online.private_session is not None  # write_bundle ships it
    clicked = np.array([4, 17, 250, 17])
    candidates = np.arange(0, N_ITEMS, 7)
    by_ids = online.rank(clicked, candidates)
    rows = online.bundle.item_rows[clicked]
    by_rows = online.rank_rows(rows, np.ones(len(clicked), np.float32), candidates)
    np.testing.assert_array_equal(by_rows.item_ids, by_ids.item_ids)
    np.testing.assert_allclose(by_rows.score, by_ids.score, rtol=1e-5, atol=1e-6)


def test_a_weight_counts_its_row_as_that_many_behaviours() -> None:
    model = ranker(3)
    candidates = torch.randint(0, N_ITEMS, (1, 9))
    with torch.no_grad():
        repeated = model.logits(torch.tensor([[5, 5, 5, 8]]), candidates)
        rows, _ = model.embed(torch.tensor([[5, 8]]))
        weighted = model.logits_from_rows(rows, torch.tensor([[3.0, 1.0]]), candidates)
        fewer = model.logits_from_rows(rows, torch.tensor([[1.0, 1.0]]), candidates)
    for a, b in zip(weighted, repeated, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fewer[0], repeated[0], atol=1e-4)  # the weight does matter


def test_the_straight_through_shares_pass_gradients_and_change_nothing_forward() -> None:
    model = ranker(4)
    with torch.no_grad():
        start = model.embed(torch.tensor([[1, 2, 3]]))[0] + 0.01
    weight, candidates = torch.ones(1, 3), torch.tensor([[1, 9, 40]])
    grads, outputs = [], []
    for tau in (None, 0.05):
        rows = start.clone().requires_grad_(True)
        ctr, _ = model.logits_from_rows(rows, weight, candidates, tau=tau)
        ctr.sum().backward()
        assert rows.grad is not None
        grads.append(rows.grad[..., model.cfg.item_dim :])
        outputs.append(ctr.detach())
    torch.testing.assert_close(outputs[1], outputs[0])  # the forward pass is the hard one
    assert not torch.allclose(grads[1], grads[0])  # the category shares now pass gradients


def test_the_encoder_onnx_matches_torch(tmp_path: Path) -> None:
    enc = encoder()
    device = OnnxInterestEncoder(onnx_encoder(enc, tmp_path), "v1")
    assert (device.history_len, device.dim) == (10, DIM)
    clicked = np.random.default_rng(0).normal(size=(7, DIM)).astype(np.float32)
    interests, weights = device.encode(clicked)
    rows, mask = np.zeros((1, 10, DIM), np.float32), np.zeros((1, 10), np.float32)
    rows[0, -7:], mask[0, -7:] = clicked, 1.0
    with torch.no_grad():
        t_interests, t_weights = enc(torch.from_numpy(rows), torch.from_numpy(mask))
    assert interests.shape == (4, DIM) and weights.shape == (4,)
    np.testing.assert_allclose(interests, t_interests[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weights, t_weights[0].numpy(), rtol=1e-4, atol=1e-5)
    many = np.random.default_rng(1).normal(size=(25, DIM)).astype(np.float32)
    np.testing.assert_allclose(device.encode(many)[0], device.encode(many[-10:])[0], atol=1e-6)


def test_the_device_sends_nothing_before_a_click_and_a_mean_row_without_an_encoder() -> None:
    assert len(private_interest([], None, "emb").interest_set) == 0
    with torch.no_grad():
        _, weights = encoder()(torch.zeros(2, 10, DIM), torch.zeros(2, 10))
    assert torch.equal(weights, torch.zeros(2, 4))  # nothing to weigh, and no NaN
    clicked = [np.full(DIM, 1.0, np.float32), np.full(DIM, 3.0, np.float32)]
    plain = private_interest(clicked, None, "emb")
    np.testing.assert_array_equal(plain.interest_set, np.full((1, DIM), 2.0, np.float32))
    np.testing.assert_array_equal(plain.weights, [2.0])
    assert plain.embedding_version == "emb"


def private(rows: np.ndarray | None, weights: np.ndarray | None, **kw: object) -> RecommendQuery:
    return RecommendQuery("d", 5, private=True, interest_set=rows, interest_weights=weights, **kw)  # type: ignore[arg-type]


def test_private_requests_are_validated() -> None:
    ok = private(np.zeros((4, 4), np.float32), np.ones(4, np.float32), exclude=(1, 2))
    check_query(ok, n_items=10, dim=4, max_k=20, limits=LIMITS)
    check_query(private(None, None), n_items=10, dim=4, max_k=20, limits=LIMITS)  # cold start
    bad_row = np.zeros((2, 4), np.float32)
    cases = {
        "carries no behaviour": private(None, None, recent=(Behavior(3, Action.CLICK, 1),)),
        "1 to 16 rows": private(np.zeros((17, 4), np.float32), np.ones(17, np.float32)),
        "expected dim 4": private(np.zeros((2, 3), np.float32), np.ones(2, np.float32)),
        "finite": private(np.where([[1], [0]], np.nan, bad_row), np.ones(2, np.float32)),
        "within": private(bad_row + 101.0, np.ones(2, np.float32)),
        "one weight per row": private(bad_row, np.ones(3, np.float32)),
        "0 to 1000": private(bad_row, np.array([1.0, -1.0], np.float32)),
        "weights without": private(None, np.ones(2, np.float32)),
        "interest: values": private(None, None, interest=np.full(4, 1e3, np.float32)),
        "private requests only": RecommendQuery("d", 5, interest_set=bad_row),
    }
    for message, query in cases.items():
        with pytest.raises(errors.InvalidArgument, match=message):
            check_query(query, n_items=10, dim=4, max_k=20, limits=LIMITS)


def test_private_fields_cross_grpc_and_rest_alike() -> None:
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    msg = pb.RecommendRequest(device_id="d", k=3, private=True, interest_weights=[2.0, 1.0])
    msg.interest_set.CopyFrom(matrix_to_proto(rows))
    body = RecommendBody(
        device_id="d", k=3, private=True, interest_weights=[2.0, 1.0],
        interest_set={"rows": 2, "cols": 4, "data": base64.b64encode(rows.tobytes()).decode()},
    )  # fmt: skip
    for q in (query_from_proto(msg), query_from_body(body)):
        assert q.private and q.recent == ()
        np.testing.assert_array_equal(q.interest_set, rows)  # type: ignore[arg-type]
        np.testing.assert_array_equal(q.interest_weights, [2.0, 1.0])  # type: ignore[arg-type]
    assert query_from_proto(pb.RecommendRequest(device_id="d", k=3)).interest_set is None
    msg.interest_set.data = msg.interest_set.data[:-4]  # a forged byte count
    with pytest.raises(errors.InvalidArgument, match="interest_set"):
        query_from_proto(msg)
    body.interest_set.rows = 3  # type: ignore[union-attr]
    with pytest.raises(errors.InvalidArgument, match="interest_set"):
        query_from_body(body)


def recommend_service(online: OnlineRecommender, sessions: MemorySessions) -> RecommendService:
    limits = RecommendLimits(20, 50, 100, 50, 400, exclude_served=False)
    budget = MemoryBudget(rate=1e6, burst=1e6)
    return RecommendService(DeviceAuth(b"s" * 32), online, sessions, budget, budget, limits)


def test_a_private_request_ranks_without_ids_and_purges_stored_behaviour(
    served: tuple[DinRanker, OnlineRecommender],
) -> None:
    _, online = served
    sessions = MemorySessions(ttl_s=60)
    svc = recommend_service(online, sessions)
    token = svc.auth.token_for("d")
    recent = tuple(Behavior(i, Action.CLICK, t) for t, i in enumerate((4, 17, 250), 1))
    svc.recommend(RecommendQuery("d", 5, recent=recent), token)
    assert sessions.load("d").recent  # type: ignore[union-attr]  # the default mode keeps it
    rows = online.bundle.item_rows[[4, 17, 250]]
    answer = svc.recommend(private(rows, np.ones(3, np.float32), exclude=(1, 2, 3)), token)
    assert len(answer.item_ids) == 5 and not {1, 2, 3} & set(answer.item_ids.tolist())
    assert sessions.load("d") == Session()  # no behaviour, no interest, nothing served kept
    assert sessions.load("other") is None
    by_ids = online.recommend_private(rows, np.ones(3, np.float32), None, np.array([1, 2, 3]), 5)
    np.testing.assert_array_equal(answer.item_ids, by_ids.item_ids)
    cold = svc.recommend(replace(private(None, None), device_id="new"), svc.auth.token_for("new"))
    assert len(cold.item_ids) == 5 and sessions.load("new") is None  # nothing to keep: no key


class RecordingCloud:
    """Answers with the next `k` ids of a fixed catalogue and records what each call sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[list, PrivateInterest | None]] = []
        self.next_id = 0

    def recommend(
        self, device_id: str, k: int, recent: list, exclude: list[int],
        private: PrivateInterest | None = None,
    ) -> CloudList:  # fmt: skip
        self.sent.append((recent, private))
        ids = np.arange(self.next_id, self.next_id + k)
        self.next_id += k
        rows = np.random.default_rng(self.next_id).normal(size=(k, DIM)).astype(np.float32)
        return CloudList(ids, ids % 5, np.linspace(0.9, 0.1, k, dtype=np.float32), rows,
                         "din-x", "emb-x", "rid")  # fmt: skip


class EncoderSlot:
    """A slot holding a fixed encoder (or None), as InterestEncoderSlot holds the fetched one."""

    def __init__(self, current: object) -> None:
        self.current, self.version = current, "interest-test"


class BrokenEncoder:
    embedding_version = "emb-x"

    def encode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("broken model")


def agent(cloud: RecordingCloud, slot: EncoderSlot | None, private_on: bool) -> AgentService:
    settings = DeviceSettings(feed=FeedSettings(pool_size=12), pacing=PacingSettings())
    registry = SessionRegistry(build_session_factory(settings), max_devices=3)
    return AgentService(
        registry, cloud, RerankerSlot(), None, 12, 50, "always", build_pacer(settings.pacing),  # type: ignore[arg-type]
        interest_encoder=slot, private_recommend=private_on,  # type: ignore[arg-type]
    )  # fmt: skip


def click_and_ask(svc: AgentService) -> None:
    page = svc.recommend("d", 4)
    item = int(page.items.items[0])
    svc.record_events("d", [AppEvent(item, Action.EXPOSURE, 1), AppEvent(item, Action.CLICK, 2)])
    svc.recommend("d", 4)  # policy "always": a second cloud call


def test_the_agent_sends_no_event_window_in_private_mode(tmp_path: Path) -> None:
    enc = OnnxInterestEncoder(onnx_encoder(encoder(), tmp_path), "interest-v", 1, "emb-x")
    for slot, carried, rows in [
        (EncoderSlot(enc), "encoder", 4), (EncoderSlot(None), "no_encoder", 1),
        (EncoderSlot(BrokenEncoder()), "encoder_failed", 1), (None, "no_encoder", 1),
    ]:  # fmt: skip
        cloud = RecordingCloud()
        svc = agent(cloud, slot, private_on=True)
        click_and_ask(svc)
        (first_recent, first), (recent, sent) = cloud.sent
        assert first_recent == [] and recent == []  # the window never leaves
        assert first is not None and len(first.interest_set) == 0  # no click yet
        assert sent is not None and sent.interest_set.shape == (rows, DIM), carried
        assert sent.embedding_version == "emb-x"
        assert svc.private_carried == {"no_clicks": 1, carried: 1}
    cloud = RecordingCloud()
    click_and_ask(agent(cloud, EncoderSlot(enc), private_on=False))
    assert [p for _, p in cloud.sent] == [None, None] and len(cloud.sent[1][0]) == 2


def test_an_encoder_of_other_rows_is_not_used(tmp_path: Path) -> None:
    enc = OnnxInterestEncoder(onnx_encoder(encoder(), tmp_path), "interest-v", 1, "emb-other")
    cloud = RecordingCloud()
    svc = agent(cloud, EncoderSlot(enc), private_on=True)
    click_and_ask(svc)
    assert cloud.sent[1][1].interest_set.shape == (1, DIM)  # type: ignore[union-attr]
    assert svc.private_carried["embedding_mismatch"] == 1
