"""Secure aggregation of sparse submodels: Shamir, the quantiser, whole rounds with dropouts."""

from __future__ import annotations

import random
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace

import numpy as np
import pytest

from tandem_core.federated.secagg import (
    EncryptedShare,
    InvalidMessage,
    KeyAdvert,
    MaskedInput,
    Quantiser,
    RoundAborted,
    SecAggClient,
    SecAggParams,
    SecAggResult,
    SecAggServer,
    UnmaskShares,
    WrongStage,
    keys,
    masks,
    shamir,
)
from tandem_core.federated.secagg.field import add, neg, sub

CATALOGUE, WIDTH, DENSE = 500, 5, 7
SECRET = bytes(range(32))


# --- Shamir ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("t", "n"), [(1, 1), (2, 3), (5, 8), (11, 20)])
def test_shamir_any_t_shares_give_the_secret(t: int, n: int) -> None:
    r = random.Random(t * 100 + n)
    xs = list(range(1, n + 1))
    ys = shamir.split(SECRET, t, xs, r)
    for _ in range(5):
        pick = r.sample(range(n), t)
        assert shamir.combine([(xs[i], ys[i]) for i in pick]) == SECRET
    assert shamir.combine(list(zip(xs, ys, strict=True))) == SECRET  # more than t also works


def test_shamir_fewer_than_t_shares_fit_every_secret() -> None:
    """t − 1 shares are consistent with any secret: for each candidate s' there is a t-th share
    that, with the same t − 1, reconstructs s'. So the t − 1 shares pin nothing down."""
    t, xs = 4, [1, 2, 3, 4, 5]
    ys = shamir.split(SECRET, t, xs, random.Random(1))
    known = list(zip(xs[: t - 1], ys[: t - 1], strict=True))
    for candidate in (bytes(32), b"\xff" * 32, bytes(reversed(SECRET))):
        # the polynomial through (0, s') and the t − 1 known points, evaluated at x = 5
        y5 = _at([(0, int.from_bytes(candidate, "big")), *known], 5)
        assert shamir.combine([*known, (5, y5)]) == candidate
    with pytest.raises(ValueError, match="inconsistent"):
        shamir.combine(known)  # t − 1 shares interpolate a random field element, not s


def _at(points: list[tuple[int, int]], x: int) -> int:
    """Lagrange interpolation of `points` at x over GF(p) (the test's own, independent one)."""
    p, total = shamir.PRIME, 0
    for i, (xi, yi) in enumerate(points):
        num = den = 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num, den = num * (x - xj) % p, den * (xi - xj) % p
        total = (total + yi * num * pow(den, -1, p)) % p
    return total


def test_shamir_reused_coefficients_match_combine() -> None:
    r = random.Random(2)
    xs = [3, 7, 8, 12, 15]
    lag = shamir.LagrangeAtZero(xs)
    for _ in range(10):
        secret = r.randbytes(32)
        ys = shamir.split(secret, len(xs), [*xs, 20], r)[: len(xs)]
        assert lag.combine(ys) == secret == shamir.combine(list(zip(xs, ys, strict=True)))


def test_shamir_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        shamir.split(b"short", 2, [1, 2])
    with pytest.raises(ValueError):
        shamir.split(SECRET, 3, [1, 2])
    with pytest.raises(ValueError):
        shamir.split(SECRET, 2, [0, 1])
    with pytest.raises(ValueError):
        shamir.split(SECRET, 2, [1, 1])


# --- field and quantiser ----------------------------------------------------------------------
def test_field_wraps_mod_2_32() -> None:
    a = np.array([2**32 - 1, 5], np.uint32)
    b = np.array([2, 7], np.uint32)
    assert add(a, b).tolist() == [1, 12]
    assert sub(b, a).tolist() == [3, 2]
    assert add(a, neg(a)).tolist() == [0, 0]


@pytest.mark.parametrize(
    ("clip", "cohort", "n"), [(1.0, 20, 20), (16.0, 128, 100), (64.0, 1000, 3)]
)
def test_quantiser_sum_within_n_over_s(clip: float, cohort: int, n: int) -> None:
    q = Quantiser(clip, cohort)
    assert q.bits == 32 - int(np.ceil(np.log2(cohort + 1)))
    rng = np.random.default_rng(3)
    x = rng.uniform(-1.5 * clip, 1.5 * clip, (n, 400)).astype(np.float32)  # some get clipped
    total = np.zeros(400, np.uint32)
    for row in x:
        total = add(total, q.encode(row, rng))
    got = q.decode_sum(total, n).astype(np.float64)
    want = np.clip(x.astype(np.float64), -clip, clip).sum(0)
    bound = n / q.scale + np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - want) < bound).all()
    assert np.abs(got - want).max() > 0  # the bound is not vacuous: rounding happened


def test_quantiser_cannot_wrap_at_max_cohort() -> None:
    q = Quantiser(2.0, 127)
    top = q.encode(np.full(3, 5.0, np.float32), np.random.default_rng(0))  # clipped to +clip
    total = np.zeros(3, np.uint32)
    for _ in range(127):
        total = add(total, top)
    assert int(total[0]) == 127 * int(top[0]) < 2**32
    assert np.allclose(q.decode_sum(total, 127), 127 * 2.0, atol=127 / q.scale)


def test_quantiser_rounding_is_unbiased() -> None:
    q = Quantiser(1.0, 3)  # coarse: B = 30, but the fraction is what matters
    x = np.full(200_000, 0.123456789, np.float32)
    codes = q.encode(x, np.random.default_rng(4)).astype(np.float64)
    z = (np.float64(x[0]) + 1.0) * q.scale
    # codes are floor(z) or floor(z) + 1; their mean estimates z to ±4 standard errors
    assert set(np.unique(codes)) <= {np.floor(z), np.floor(z) + 1}
    assert abs(codes.mean() - z) < 4 * 0.5 / np.sqrt(len(codes))


def test_quantiser_refuses_nan_and_bad_settings() -> None:
    with pytest.raises(ValueError):
        Quantiser(1.0, 4).encode(np.array([np.nan], np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError):
        Quantiser(0.0, 4)
    with pytest.raises(ValueError):
        Quantiser(1.0, 4).decode_sum(np.zeros(1, np.uint32), 5)


# --- whole rounds ------------------------------------------------------------------------------
@dataclass
class Cohort:
    params: SecAggParams
    held: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    dense: dict[str, np.ndarray]
    clients: dict[str, SecAggClient]


def cohort(n: int, t: int, seed: int, round_id: str = "round-1") -> Cohort:
    rng = np.random.default_rng(seed)
    params = SecAggParams(round_id, t, WIDTH, DENSE)
    ids = [f"dev-{i:03d}" for i in rng.permutation(n)]  # ids not in creation order
    held, rows, dense = {}, {}, {}
    for u in ids:
        size = int(rng.integers(10, 90))
        weights = 1.0 / np.arange(1, CATALOGUE + 1)  # Zipf-like: popular rows shared often
        held[u] = np.sort(rng.choice(CATALOGUE, size, replace=False, p=weights / weights.sum()))
        rows[u] = rng.integers(0, 2**32, (size, WIDTH), dtype=np.uint32)
        dense[u] = rng.integers(0, 2**32, DENSE, dtype=np.uint32)
    clients = {u: SecAggClient(u, params) for u in ids}
    return Cohort(params, held, rows, dense, clients)


def run_round(
    c: Cohort,
    gone_after_shares: AbstractSet[str] = frozenset(),
    gone_after_masked: AbstractSet[str] = frozenset(),
) -> tuple[SecAggServer, SecAggResult]:
    server = SecAggServer(c.params, c.held)
    roster = server.collect_adverts([cl.advertise() for cl in c.clients.values()])
    shares = [e for cl in c.clients.values() for e in cl.share_keys(roster)]
    inbox = server.route_shares(shares)
    masked = [
        c.clients[u].masked_input(
            c.rows[u], c.held[u], c.dense[u], inbox[u], server.intersections_for(u)
        )
        for u in inbox
        if u not in gone_after_shares
    ]
    u3 = server.collect_masked(masked)
    dropped = [u for u in inbox if u not in u3]
    answers = [c.clients[u].unmask(u3, dropped) for u in u3 if u not in gone_after_masked]
    return server, server.unmask(answers)


def plain_sum(c: Cohort, devices: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.unique(np.concatenate([c.held[u] for u in devices]))
    rows, dense = np.zeros((len(ids), WIDTH), np.uint32), np.zeros(DENSE, np.uint32)
    for u in devices:
        pos = np.searchsorted(ids, c.held[u])
        rows[pos] = add(rows[pos], c.rows[u])
        dense = add(dense, c.dense[u])
    return ids, rows, dense


def assert_exact(c: Cohort, result: SecAggResult, devices: list[str]) -> None:
    ids, rows, dense = plain_sum(c, devices)
    assert sorted(result.survivors) == sorted(devices)
    np.testing.assert_array_equal(result.row_ids, ids)
    np.testing.assert_array_equal(result.row_sums, rows)
    np.testing.assert_array_equal(result.dense, dense)
    holders = sum(np.isin(ids, c.held[u]).astype(np.int64) for u in devices)
    np.testing.assert_array_equal(result.holders, holders)


@pytest.mark.parametrize(("n", "t"), [(8, 5), (20, 11)])
def test_round_sum_is_exact(n: int, t: int) -> None:
    c = cohort(n, t, seed=n)
    _, result = run_round(c)
    assert_exact(c, result, list(c.clients))
    assert result.dropped == []


@pytest.mark.parametrize(("n", "t"), [(8, 5), (20, 11)])
def test_round_of_quantised_floats_decodes_within_the_bound(n: int, t: int) -> None:
    c = cohort(n, t, seed=100 + n)
    q, rng = Quantiser(4.0, n), np.random.default_rng(n)
    floats = {u: rng.normal(0, 2, (len(c.held[u]), WIDTH)).astype(np.float32) for u in c.held}
    dense_f = {u: rng.normal(0, 2, DENSE).astype(np.float32) for u in c.held}
    for u in c.held:
        c.rows[u], c.dense[u] = q.encode(floats[u], rng), q.encode(dense_f[u], rng)
    _, result = run_round(c)
    want_rows = np.zeros((len(result.row_ids), WIDTH))
    for u in c.held:
        pos = np.searchsorted(result.row_ids, c.held[u])
        want_rows[pos] += np.clip(floats[u].astype(np.float64), -4.0, 4.0)
    want_dense = sum(np.clip(d.astype(np.float64), -4.0, 4.0) for d in dense_f.values())
    got_rows = q.decode_sum(result.row_sums, result.holders[:, None])
    slack = 1e-5  # float32 rounding of results of magnitude ≤ n·clip
    assert (np.abs(got_rows - want_rows) <= result.holders[:, None] / q.scale + slack).all()
    assert (np.abs(q.decode_sum(result.dense, n) - want_dense) <= n / q.scale + slack).all()


@pytest.mark.parametrize(("n", "t"), [(8, 5), (20, 11)])
def test_dropouts_after_share_keys_up_to_n_minus_t(n: int, t: int) -> None:
    c = cohort(n, t, seed=200 + n)
    gone = set(list(c.clients)[: n - t])
    _, result = run_round(c, gone_after_shares=gone)
    survivors = [u for u in c.clients if u not in gone]
    assert_exact(c, result, survivors)
    assert sorted(result.dropped) == sorted(gone)


@pytest.mark.parametrize(("n", "t"), [(8, 5), (20, 11)])
def test_one_dropout_more_aborts(n: int, t: int) -> None:
    c = cohort(n, t, seed=300 + n)
    with pytest.raises(RoundAborted, match="below"):
        run_round(c, gone_after_shares=set(list(c.clients)[: n - t + 1]))


def test_dropout_after_masked_input_is_counted() -> None:
    c = cohort(8, 5, seed=400)
    late = set(list(c.clients)[:2])
    early = {list(c.clients)[2]}
    _, result = run_round(c, gone_after_shares=early, gone_after_masked=late)
    counted = [u for u in c.clients if u not in early]  # the late ones' inputs are in the sum
    assert_exact(c, result, counted)


def test_fewer_unmask_answers_than_t_abort() -> None:
    c = cohort(8, 5, seed=401)
    with pytest.raises(RoundAborted, match="unmask answers"):
        run_round(c, gone_after_masked=set(list(c.clients)[:4]))


def test_a_replayed_server_reaches_the_same_sum() -> None:
    """The aggregator replays the stored messages into a fresh server (a restarted process)."""
    c = cohort(8, 5, seed=402)
    server, result = run_round(c, gone_after_shares={next(iter(c.clients))})
    again = SecAggServer(c.params, c.held)
    again.collect_adverts([cl.advertise() for cl in c.clients.values()])
    again.route_shares([e for cl in c.clients.values() for e in cl.share_keys(list(
        server.roster.values()))])  # fmt: skip
    survivors = list(server.u3)
    again.collect_masked([server.u3[u] for u in survivors])
    dropped = [u for u in server.u2 if u not in survivors]
    replay = again.unmask([c.clients[u].unmask(survivors, dropped) for u in survivors])
    np.testing.assert_array_equal(replay.row_sums, result.row_sums)
    np.testing.assert_array_equal(replay.dense, result.dense)


def test_a_device_that_shares_with_only_some_peers_is_left_out_of_u2() -> None:
    c = cohort(8, 5, seed=403)
    server = SecAggServer(c.params, c.held)
    roster = server.collect_adverts([cl.advertise() for cl in c.clients.values()])
    partial = sorted(c.clients)[2]
    shares = [
        e
        for cl in c.clients.values()
        for e in cl.share_keys(roster)[: (3 if cl.device_id == partial else None)]
    ]
    inbox = server.route_shares(shares)
    assert partial not in inbox and len(inbox) == 7
    assert all(e.sender != partial for box in inbox.values() for e in box)
    assert all(len(box) == 6 for box in inbox.values())
    with pytest.raises(InvalidMessage, match="not in U2"):
        server.intersections_for(partial)
    masked = [
        c.clients[u].masked_input(
            c.rows[u], c.held[u], c.dense[u], inbox[u], server.intersections_for(u)
        )
        for u in inbox
    ]
    u3 = server.collect_masked(masked)
    result = server.unmask([c.clients[u].unmask(u3, []) for u in u3])
    assert_exact(c, result, u3)
    assert result.dropped == [partial]


# --- what one masked input shows ------------------------------------------------------------
def test_one_masked_input_differs_from_its_input_almost_everywhere() -> None:
    """A masked input looks like noise to the server: it differs from the plain input in nearly
    every coordinate and its values spread over all of Z_2^32, while the plain input here sits in
    a narrow band. (A statistical smoke test, not a proof: the proof is the PRG's security.)"""
    c = cohort(8, 5, seed=500)
    narrow = np.random.default_rng(0)
    for u in c.held:
        c.rows[u] = narrow.integers(2**31, 2**31 + 1000, c.rows[u].shape, dtype=np.uint32)
        c.dense[u] = narrow.integers(2**31, 2**31 + 1000, DENSE, dtype=np.uint32)
    server, _ = run_round(c)
    u = next(iter(c.clients))
    y = np.concatenate([server.u3[u].rows.ravel(), server.u3[u].dense])
    x = np.concatenate([c.rows[u].ravel(), c.dense[u]])
    assert np.mean(y == x) < 0.01
    top = y >> np.uint32(28)  # top 4 bits: the plain input has only the value 8 here
    assert len(np.unique(top)) >= 12 and np.all(x >> np.uint32(28) == 8)


# --- security rules -------------------------------------------------------------------------
def test_threshold_must_exceed_half_the_roster() -> None:
    c = cohort(8, 4, seed=600)  # t = 4 = n / 2: unsafe
    server = SecAggServer(c.params, c.held)
    adverts = [cl.advertise() for cl in c.clients.values()]
    with pytest.raises(RoundAborted, match="half"):
        server.collect_adverts(adverts)
    client = next(iter(c.clients.values()))
    with pytest.raises(RoundAborted, match="half"):
        client.share_keys(adverts)


def test_client_refuses_bad_rosters() -> None:
    c = cohort(6, 4, seed=601)
    adverts = [cl.advertise() for cl in c.clients.values()]
    me = next(iter(c.clients.values()))
    others = [a for a in adverts if a.device_id != me.device_id]
    with pytest.raises(InvalidMessage, match="missing"):
        me.share_keys(others)
    with pytest.raises(RoundAborted, match="below"):
        me.share_keys([me.advertise(), *others[:2]])
    with pytest.raises(InvalidMessage, match="twice"):
        me.share_keys([*adverts, adverts[1]])
    copycat = KeyAdvert("dev-999", others[0].c_pk, others[0].s_pk)
    with pytest.raises(InvalidMessage, match="key appears twice"):
        me.share_keys([*adverts, copycat])
    assert len(me.share_keys(adverts)) == 5  # nothing was spent on the refused rosters


def test_server_refuses_duplicates_and_strangers_and_keeps_its_state() -> None:
    c = cohort(6, 4, seed=602)
    server = SecAggServer(c.params, c.held)
    adverts = [cl.advertise() for cl in c.clients.values()]
    with pytest.raises(InvalidMessage):
        server.collect_adverts([*adverts, adverts[0]])
    with pytest.raises(InvalidMessage, match="outside the cohort"):
        server.collect_adverts([*adverts, KeyAdvert("stranger", b"\x01" * 32, b"\x02" * 32)])
    roster = server.collect_adverts(adverts)  # the refused calls changed nothing
    assert [a.device_id for a in roster] == sorted(c.clients)
    shares = [e for cl in c.clients.values() for e in cl.share_keys(roster)]
    with pytest.raises(InvalidMessage, match="twice"):
        server.route_shares([*shares, shares[0]])
    inbox = server.route_shares(shares)
    u = roster[0].device_id
    bad = MaskedInput(
        u, np.zeros((len(c.held[u]) + 1, WIDTH), np.uint32), np.zeros(DENSE, np.uint32)
    )
    with pytest.raises(InvalidMessage, match="rows"):
        server.collect_masked([bad])
    masked = [
        c.clients[d].masked_input(
            c.rows[d], c.held[d], c.dense[d], inbox[d], server.intersections_for(d)
        )
        for d in inbox
    ]
    assert server.collect_masked(masked) == sorted(c.clients)
    with pytest.raises(WrongStage):
        server.collect_masked(masked)


def test_client_never_reveals_both_secrets_of_a_peer() -> None:
    c = cohort(8, 5, seed=603)
    server = SecAggServer(c.params, c.held)
    roster = server.collect_adverts([cl.advertise() for cl in c.clients.values()])
    inbox = server.route_shares([e for cl in c.clients.values() for e in cl.share_keys(roster)])
    ids = sorted(c.clients)
    me = c.clients[ids[0]]
    me.masked_input(c.rows[ids[0]], c.held[ids[0]], c.dense[ids[0]], inbox[ids[0]],
                    server.intersections_for(ids[0]))  # fmt: skip
    with pytest.raises(InvalidMessage, match="both"):
        me.unmask(ids, [ids[3]])  # ids[3] listed as survivor and dropped
    with pytest.raises(InvalidMessage, match="together"):
        me.unmask(ids[:6], [])  # two U2 devices in neither list
    with pytest.raises(InvalidMessage, match="not a survivor"):
        me.unmask(ids[1:], [ids[0]])  # its own s_sk: never
    first = me.unmask(ids[:7], [ids[7]])
    assert set(first.s_shares) == {ids[7]} and set(first.b_shares) == set(ids[:7])
    with pytest.raises(InvalidMessage, match="earlier"):
        me.unmask(ids, [])  # now ids[7] as a survivor: its b on top of its s_sk
    with pytest.raises(InvalidMessage, match="earlier"):
        me.unmask([ids[0], *ids[2:]], [ids[1]])  # ids[1]'s s_sk on top of its b
    assert me.unmask(ids[:7], [ids[7]]) == first  # the same request again: the same answer


def test_tampered_or_readdressed_shares_are_refused() -> None:
    c = cohort(6, 4, seed=604)
    server = SecAggServer(c.params, c.held)
    roster = server.collect_adverts([cl.advertise() for cl in c.clients.values()])
    inbox = server.route_shares([e for cl in c.clients.values() for e in cl.share_keys(roster)])
    u, v, w = sorted(c.clients)[:3]
    args = (c.rows[u], c.held[u], c.dense[u])
    box = inbox[u][0]
    flipped = box.ciphertext[:20] + bytes([box.ciphertext[20] ^ 1]) + box.ciphertext[21:]
    with pytest.raises(InvalidMessage, match="authenticate"):
        c.clients[u].masked_input(*args, [replace(box, ciphertext=flipped), *inbox[u][1:]],
                                  server.intersections_for(u))  # fmt: skip
    # the share v sealed for w, delivered to u: neither the key nor the associated data fit
    to_w = next(e for e in inbox[w] if e.sender == v)
    others = [e for e in inbox[u] if e.sender != v]
    with pytest.raises(InvalidMessage):
        c.clients[u].masked_input(*args, [*others, replace(to_w, receiver=u)],
                                  server.intersections_for(u))  # fmt: skip
    # the same share presented as coming from another round
    other_round = cohort(6, 4, seed=604, round_id="round-2")
    stranger = other_round.clients[u]
    stranger.share_keys(roster_with(roster, u, stranger.advertise()))
    with pytest.raises(InvalidMessage, match="authenticate"):
        stranger.masked_input(*args, inbox[u], server.intersections_for(u))
    # the genuine inbox still works: the refusals changed nothing
    assert c.clients[u].masked_input(*args, inbox[u], server.intersections_for(u)).rows.shape


def test_a_share_reflected_back_to_its_sender_is_refused() -> None:
    """u's share for v is sealed under the key u and v share in both directions; only the
    associated data (sender, receiver) tells u's message from v's. Reflected, it must fail."""
    c = cohort(6, 4, seed=606)
    server = SecAggServer(c.params, c.held)
    roster = server.collect_adverts([cl.advertise() for cl in c.clients.values()])
    sent = {cl.device_id: cl.share_keys(roster) for cl in c.clients.values()}
    inbox = server.route_shares([e for out in sent.values() for e in out])
    u = sorted(c.clients)[0]
    own = sent[u][0]  # u → v
    reflected = EncryptedShare(own.receiver, u, own.ciphertext)  # "v → u"
    others = [e for e in inbox[u] if e.sender != own.receiver]
    with pytest.raises(InvalidMessage, match="authenticate"):
        c.clients[u].masked_input(
            c.rows[u], c.held[u], c.dense[u], [*others, reflected], server.intersections_for(u)
        )


def test_ciphertexts_are_bound_to_round_sender_and_receiver() -> None:
    key = bytes(range(32))
    box = keys.encrypt(key, b"shares", "r1", "a", "b")
    assert keys.decrypt(key, box, "r1", "a", "b") == b"shares"
    for other in (("r2", "a", "b"), ("r1", "b", "a"), ("r1", "a", "c"), ("r1a", "", "b")):
        with pytest.raises(keys.CryptoError):
            keys.decrypt(key, box, *other)


def test_pairwise_masks_cover_exactly_the_shared_rows() -> None:
    """Without its self mask, u's input is still hidden on the dense segment and on every row
    some other U2 device holds, and is in the clear on rows only u holds — those rows' sums are
    u's values anyway (holders = 1), which is what the sparse design accepts."""
    c = cohort(8, 5, seed=607)
    server, result = run_round(c)
    u = sorted(c.clients)[0]
    seed = c.clients[u]._b  # what the server rebuilds from the b shares
    n = len(c.held[u])
    b = masks.self_mask(seed, masks.mask_length(n, WIDTH, DENSE))
    b_rows, b_dense = masks.as_segments(b, n, WIDTH)
    rows, dense = sub(server.u3[u].rows, b_rows), sub(server.u3[u].dense, b_dense)
    others = np.unique(np.concatenate([c.held[v] for v in c.held if v != u]))
    shared = np.isin(c.held[u], others)
    assert shared.any() and (~shared).any()
    np.testing.assert_array_equal(rows[~shared], c.rows[u][~shared])
    assert np.mean(rows[shared] == c.rows[u][shared]) < 0.01
    assert (dense != c.dense[u]).all()  # a coincidence has probability 7 / 2^32
    alone = np.isin(result.row_ids, c.held[u][~shared])
    assert (result.holders[alone] == 1).all()


def roster_with(roster: list[KeyAdvert], device: str, advert: KeyAdvert) -> list[KeyAdvert]:
    return [advert if a.device_id == device else a for a in roster]


def test_client_refuses_intersections_that_do_not_match_its_inbox() -> None:
    c = cohort(6, 4, seed=605)
    server = SecAggServer(c.params, c.held)
    roster = server.collect_adverts([cl.advertise() for cl in c.clients.values()])
    inbox = server.route_shares([e for cl in c.clients.values() for e in cl.share_keys(roster)])
    u = sorted(c.clients)[0]
    shared = server.intersections_for(u)
    args = (c.rows[u], c.held[u], c.dense[u], inbox[u])
    missing = dict(list(shared.items())[1:])
    with pytest.raises(InvalidMessage, match="exactly the peers"):
        c.clients[u].masked_input(*args, missing)
    foreign = {**shared, next(iter(shared)): np.array([CATALOGUE + 5], np.int64)}
    with pytest.raises(InvalidMessage, match="subset"):
        c.clients[u].masked_input(*args, foreign)
    y = c.clients[u].masked_input(*args, shared)
    with pytest.raises(InvalidMessage, match="second"):  # two inputs under one mask: refused
        c.clients[u].masked_input(add(c.rows[u], np.ones_like(c.rows[u])), *args[1:], shared)
    assert c.clients[u].masked_input(*args, shared) is y


# --- messages on the wire ---------------------------------------------------------------------
def test_messages_round_trip_through_bytes() -> None:
    params = SecAggParams("r", 3, 4, 5)
    assert SecAggParams.from_bytes(params.to_bytes()) == params
    advert = KeyAdvert("dév-1", b"\x01" * 32, b"\x02" * 32)
    assert KeyAdvert.from_bytes(advert.to_bytes()) == advert
    share = EncryptedShare("a", "b", b"\x09" * 160)
    assert EncryptedShare.from_bytes(share.to_bytes()) == share
    m = MaskedInput(
        "a", np.arange(12, dtype=np.uint32).reshape(3, 4), np.array([2**32 - 1], np.uint32)
    )
    back = MaskedInput.from_bytes(m.to_bytes())
    assert back.device_id == "a" and back.rows.dtype == np.uint32
    np.testing.assert_array_equal(back.rows, m.rows)
    np.testing.assert_array_equal(back.dense, m.dense)
    answer = UnmaskShares("a", {"b": shamir.PRIME - 1}, {"a": 0, "c": 12345})
    assert UnmaskShares.from_bytes(answer.to_bytes()) == answer


_ADVERT = KeyAdvert("a", b"x" * 32, b"y" * 32).to_bytes()
_MASKED = MaskedInput("a", np.zeros((2, 3), np.uint32), np.zeros(4, np.uint32)).to_bytes()
_ANSWER = UnmaskShares("a", {"b": 1}).to_bytes()


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (KeyAdvert, b""),
        (KeyAdvert, b"SAk1"),
        (KeyAdvert, _ADVERT[:-1]),  # truncated
        (KeyAdvert, _ADVERT + b"\x00"),  # trailing bytes
        (KeyAdvert, _MASKED),  # another message's tag
        (MaskedInput, _MASKED[:-4]),  # one value short
        (MaskedInput, _MASKED.replace(b"\x00\x00\x00\x02", b"\x7f\xff\xff\xff", 1)),  # huge
        (UnmaskShares, _ANSWER.replace(b"\x00\x00\x00\x01", b"\xff\xff\xff\xff", 1)),
        (UnmaskShares, _ANSWER[:-66] + b"\xff" * 66),  # a share outside the field
        (
            EncryptedShare,
            EncryptedShare("a", "b", b"c").to_bytes().replace(b"\x00\x01a", b"\x00\x00"),
        ),
    ],
)
def test_malformed_bytes_are_invalid_messages(cls: type, data: bytes) -> None:
    with pytest.raises(InvalidMessage):
        cls.from_bytes(data)  # type: ignore[attr-defined]
