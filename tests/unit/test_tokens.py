"""Device tokens v2: format, expiry and skew, keyring and rotation, legacy window, minting."""

from __future__ import annotations

import pytest

from cloud_service.auth import DeviceAuth, parse_keyring
from cloud_service.errors import InvalidArgument, Unauthenticated
from cloud_service.settings import RequestSettings
from cloud_service.settings import load_settings as load_cloud
from protos.auth import (
    DEFAULT_KID,
    DEFAULT_LIFETIME_S,
    TokenMinter,
    device_token,
    legacy_token,
    mint_token,
    parse_token,
)

pytestmark = pytest.mark.unit

OLD, NEW = b"the old secret of 32 bytes......", b"the new secret of 32 bytes......"
NOW = 1_700_000_000


class Clock:
    """A settable clock: expiry is tested by moving time, never by waiting."""

    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def refused(auth: DeviceAuth, device: str, token: str | None) -> str:
    with pytest.raises(Unauthenticated) as err:
        auth.verify(device, token)
    return str(err.value)


def test_the_format_names_kid_and_expiry_and_the_default_is_k0_for_12_hours() -> None:
    token = device_token(OLD, "dev-1", now=NOW)
    version, kid, expiry, mac = token.split(".")
    assert (version, kid, int(expiry)) == ("v2", DEFAULT_KID, NOW + DEFAULT_LIFETIME_S)
    assert len(mac) == 64 and int(mac, 16) >= 0
    parsed = parse_token(token)
    assert parsed is not None
    assert (parsed.kid, parsed.expires_at, parsed.mac) == (kid, NOW + 12 * 3600, mac)
    DeviceAuth(OLD, clock=Clock()).verify("dev-1", token)  # what tests and tools mint passes


def test_the_mac_covers_device_kid_and_expiry() -> None:
    base = mint_token(OLD, "dev-1", "k1", NOW)
    assert mint_token(OLD, "dev-2", "k1", NOW) != base
    assert mint_token(OLD, "dev-1", "k2", NOW).split(".")[3] != base.split(".")[3]
    assert mint_token(OLD, "dev-1", "k1", NOW + 1).split(".")[3] != base.split(".")[3]
    assert mint_token(NEW, "dev-1", "k1", NOW) != base
    assert base.split(".")[3] != legacy_token(OLD, "dev-1")


@pytest.mark.parametrize(
    "token",
    [
        "v2.k0.1700000000", "v3.k0.1700000000." + "0" * 64, "v2.k0.-5." + "0" * 64,
        "v2.k0.+5." + "0" * 64, "v2.k0.17e8." + "0" * 64, "v2..1700000000." + "0" * 64,
        "v2.k.0.1700000000." + "0" * 64, "v2.k0.1700000000." + "0" * 63,
        "v2.k0.1700000000." + "A" * 64, "v2.k0.1700000000." + "0" * 64 + ".x", "x" * 10_000,
        "v2.kø.1700000000." + "0" * 64, "not a token", "0" * 63,
    ],
)  # fmt: skip
def test_a_malformed_token_is_refused_with_a_clear_message(token: str) -> None:
    assert parse_token(token) is None
    message = refused(DeviceAuth(OLD, clock=Clock()), "dev-1", token)
    assert message == "malformed x-device-token (expected v2.<kid>.<expiry>.<mac>)"


def test_missing_and_bad_device_ids() -> None:
    auth = DeviceAuth(OLD, clock=Clock())
    assert refused(auth, "dev-1", None) == refused(auth, "dev-1", "") == "missing x-device-token"
    with pytest.raises(InvalidArgument):
        auth.verify("{dev}", auth.token_for("{dev}"))  # braces would break key hash tags
    with pytest.raises(InvalidArgument):
        auth.verify("dev-1\n", auth.token_for("dev-1\n"))  # "$" alone lets a final newline by


def test_a_token_opens_only_its_own_device() -> None:
    auth = DeviceAuth(OLD, clock=Clock())
    mine = auth.token_for("attacker")
    assert refused(auth, "victim", mine) == "x-device-token does not match device_id"


def test_tampering_with_any_field_breaks_the_mac() -> None:
    auth = DeviceAuth(keys={"k1": NEW, "k0": OLD}, clock=Clock())
    version, kid, expiry, mac = mint_token(OLD, "dev-1", "k0", NOW + 60).split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    for forged in (
        f"{version}.{kid}.{int(expiry) + 3600}.{mac}",  # a longer life
        f"{version}.k1.{expiry}.{mac}",  # another key of the ring
        f"{version}.{kid}.{expiry}.{flipped}",
    ):
        assert refused(auth, "dev-1", forged) == "x-device-token does not match device_id"
    auth.verify("dev-1", f"{version}.{kid}.{expiry}.{mac}")


def test_expiry_with_the_skew_allowance() -> None:
    clock = Clock()
    auth = DeviceAuth(OLD, skew_s=30, clock=clock)
    token = mint_token(OLD, "dev-1", "k0", NOW + 100)
    clock.t = NOW + 100 + 30  # expired, within the allowance
    auth.verify("dev-1", token)
    clock.t = NOW + 100 + 31
    assert refused(auth, "dev-1", token) == "x-device-token expired 31 s ago"
    DeviceAuth(OLD, skew_s=0, clock=Clock(NOW + 100)).verify("dev-1", token)
    assert "expired 1 s ago" in refused(DeviceAuth(OLD, skew_s=0, clock=Clock(NOW + 101)),
                                        "dev-1", token)  # fmt: skip


def test_an_expiry_beyond_the_max_lifetime_is_refused() -> None:
    auth = DeviceAuth(OLD, skew_s=30, max_lifetime_s=3600, clock=Clock())
    auth.verify("dev-1", mint_token(OLD, "dev-1", "k0", NOW + 3600 + 30))
    far = mint_token(OLD, "dev-1", "k0", NOW + 3600 + 31)
    assert refused(auth, "dev-1", far) == "x-device-token expires more than 3600 s from now"


def test_the_keyring_accepts_every_kid_it_holds_and_refuses_others() -> None:
    auth = DeviceAuth(keys=parse_keyring(f"k1:{NEW.decode()},k0:{OLD.decode()}"), clock=Clock())
    assert (auth.kids, auth.current_kid) == (["k1", "k0"], "k1")
    auth.verify("dev-1", mint_token(NEW, "dev-1", "k1", NOW + 60))
    auth.verify("dev-1", mint_token(OLD, "dev-1", "k0", NOW + 60))
    assert auth.token_for("dev-1").startswith("v2.k1.")  # the current key issues
    message = refused(auth, "dev-1", mint_token(NEW, "dev-1", "k9", NOW + 60))
    assert message == "x-device-token names an unknown key id 'k9'"
    # the right secret under the wrong kid is no token either
    assert "does not match" in refused(auth, "dev-1", mint_token(OLD, "dev-1", "k1", NOW + 60))


def test_rotation_add_the_new_key_switch_the_agents_drop_the_old() -> None:
    clock = Clock()
    old_agent = TokenMinter(OLD, "k0", 600, clock=clock)
    new_agent = TokenMinter(NEW, "k1", 600, clock=clock)
    before = DeviceAuth(OLD, clock=clock)  # CLOUD_AUTH_SECRET: the one key, k0
    during = DeviceAuth(keys={"k1": NEW, "k0": OLD}, clock=clock)  # 1. add the new key
    after = DeviceAuth(keys={"k1": NEW}, clock=clock)  # 3. drop the old key
    before.verify("d", old_agent("d"))
    assert "unknown key id 'k1'" in refused(before, "d", new_agent("d"))  # agents wait for 1.
    during.verify("d", old_agent("d"))  # 2. agents switch kid one by one, both pass
    during.verify("d", new_agent("d"))
    after.verify("d", new_agent("d"))
    assert refused(after, "d", old_agent("d")) == "x-device-token names an unknown key id 'k0'"


def test_legacy_tokens_pass_only_inside_the_upgrade_window() -> None:
    ring = {"k1": NEW, "k0": OLD}
    closed = DeviceAuth(keys=ring, clock=Clock())
    assert closed.accept_legacy is False  # the default
    legacy = legacy_token(OLD, "dev-1")
    assert refused(closed, "dev-1", legacy) == "legacy x-device-token refused: present a v2 token"
    window = DeviceAuth(keys=ring, accept_legacy=True, clock=Clock())
    window.verify("dev-1", legacy)
    window.verify("dev-1", legacy_token(NEW, "dev-1"))  # any key of the ring
    window.verify("dev-1", window.token_for("dev-1"))  # v2 still passes
    assert "does not match" in refused(window, "dev-2", legacy)
    assert "does not match" in refused(window, "dev-1", legacy_token(b"x" * 32, "dev-1"))


def test_the_minter_reuses_a_token_and_re_mints_it_before_expiry() -> None:
    clock = Clock()
    minter = TokenMinter(OLD, "k0", lifetime_s=400, clock=clock)
    auth = DeviceAuth(OLD, skew_s=0, clock=clock)
    first = minter("dev-1")
    assert first == minter("dev-1") and first != minter("dev-2")
    clock.t = NOW + 299  # 101 s left: more than a quarter of the lifetime, kept
    assert minter("dev-1") == first
    clock.t = NOW + 300  # 100 s left: re-minted, still 100 s before the old one expires
    second = minter("dev-1")
    assert second != first and parse_token(second).expires_at == NOW + 700  # type: ignore[union-attr]
    auth.verify("dev-1", second)
    clock.t = NOW + 401
    assert "expired" in refused(auth, "dev-1", first)
    auth.verify("dev-1", minter("dev-1"))  # every token it hands out is live


def test_the_minter_keeps_at_most_capacity_devices() -> None:
    clock = Clock()
    minter = TokenMinter(OLD, "k0", 600, capacity=2, clock=clock)
    a = minter("a")
    minter("b")
    minter("c")  # "a" dropped, least recently used
    clock.t = NOW + 1
    assert minter("a") != a and minter("c") == minter("c")


def test_bad_keys_and_kids_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        DeviceAuth(b"short")
    with pytest.raises(ValueError, match="either"):
        DeviceAuth(OLD, keys={"k0": OLD})
    with pytest.raises(ValueError, match="key id"):
        DeviceAuth(keys={"bad.kid": OLD})
    with pytest.raises(ValueError, match="key id"):
        TokenMinter(OLD, "bad kid")
    with pytest.raises(ValueError, match="key id"):
        mint_token(OLD, "d", "", NOW)


@pytest.mark.parametrize(
    ("ring", "problem"),
    [
        ("k1", "entry 1 is not <kid>:<secret>"),
        ("k1:a-secret-of-sixteen-b,bad.kid:a-secret-of-sixteen-b", "entry 2 is not"),
        ("k1:a-secret-of-sixteen-b,k1:another-secret-16-b", "key id 'k1' appears twice"),
        ("k1:short", "the secret of key id 'k1' is shorter than 16 bytes"),
        ("", "entry 1 is not"),
    ],
)
def test_a_bad_keyring_is_named_without_its_secrets(ring: str, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_keyring(ring)
    assert problem in str(err.value)
    assert "a-secret" not in str(err.value) and "short" not in str(err.value).replace("shorter", "")


def test_the_keyring_setting_is_checked_at_start_up_and_not_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_keyring("k1:s:with:colons-16b, k0:" + OLD.decode()) == {
        "k1": b"s:with:colons-16b", "k0": OLD,
    }  # fmt: skip
    assert RequestSettings().auth_accept_legacy is False
    monkeypatch.setenv("CLOUD_AUTH_KEYS", "k1:a-long-enough-secret,k0:tiny")
    with pytest.raises(SystemExit):
        load_cloud()
    err = capsys.readouterr().err
    assert "  CLOUD_AUTH_KEYS: Value error, the secret of key id 'k0' is shorter" in err
    assert "tiny" not in err and "a-long-enough-secret" not in err
