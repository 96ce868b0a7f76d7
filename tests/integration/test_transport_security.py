"""TLS on the real cloud (gRPC, REST) and agent, mutual TLS, and v2 tokens refused over it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_agent.cloud_client import CloudClient
from device_agent.ports import CloudError
from protos.auth import device_token, legacy_token, mint_token
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from tests.credentials import TOKEN_SECRET, app_post
from tests.integration.conftest import StartCloud

pytestmark = pytest.mark.integration
SECRET = TOKEN_SECRET.encode()  # this session's, set in the environment by conftest
NEW_SECRET = "the-next-fleet-key-32-bytes-long"
SERVER_NAME = "cloud.tandem.test"  # in the server certificate beside 127.0.0.1


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # trusted by nobody


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    pem = key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    path.with_suffix(".key").write_bytes(pem)


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A CA (no issuer: self-signed) or a leaf for `usage`, valid from an hour ago for a day."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_cert, signer_key = issuer if issuer is not None else (None, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_cert.subject if signer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for cloud.tandem.test and 127.0.0.1, a client certificate,
    and a second CA nobody trusts: generated in-process, no openssl CLI."""
    where = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Tandem test CA", ca_key, None)
    _write(where / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME)]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = _certificate(SERVER_NAME, server_key, (ca, ca_key), ExtendedKeyUsageOID.SERVER_AUTH,
                          sans)  # fmt: skip
    _write(where / "server", server, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("agent-0", client_key, (ca, ca_key), ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(where / "client", client, client_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    _write(where / "other-ca", _certificate("Someone else's CA", other_key, None), other_key)
    return Pki(
        where / "ca.crt", where / "server.crt", where / "server.key", where / "client.crt",
        where / "client.key", where / "other-ca.crt",
    )  # fmt: skip


def cloud_tls(pki: Pki, **extra: Any) -> dict[str, Any]:
    """start_cloud overrides (named like CLOUD_* variables) serving both transports over TLS."""
    return {
        "grpc_tls_cert_file": pki.server_cert, "grpc_tls_key_file": pki.server_key,
        "http_tls_cert_file": pki.server_cert, "http_tls_key_file": pki.server_key, **extra,
    }  # fmt: skip


def channel_credentials(ca: Path, client: Pki | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.client_key.read_bytes() if client else None,
        certificate_chain=client.client_cert.read_bytes() if client else None,
    )


def client(port: int, creds: grpc.ChannelCredentials | None, name: str | None = SERVER_NAME,
           secret: bytes = SECRET) -> CloudClient:  # fmt: skip
    """The agent's own gRPC client of the cloud, minting default (k0) tokens."""
    return CloudClient(
        f"127.0.0.1:{port}", 5.0, lambda device: device_token(secret, device),
        credentials=creds, server_name=name,
    )  # fmt: skip


def recommend(cloud: CloudClient, device: str) -> int:
    try:
        return len(cloud.recommend(device, 4, [(1, 1, 1000)], []).item_ids)
    finally:
        cloud.close()


def raw_recommend(port: int, token: str, device: str, ca: Path) -> grpc.RpcError:
    """The RPC error of a Recommend over TLS carrying `token` (the call must fail)."""
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    channel = grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(ca), options)
    with channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.TandemStub(channel).Recommend(
            pb.RecommendRequest(device_id=device, k=4), metadata=[("x-device-token", token)],
            timeout=5,
        )  # fmt: skip
    return err.value


def test_device_calls_over_tls_succeed_and_plaintext_or_untrusted_peers_fail(
    start_cloud: StartCloud, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        server, _ = start_cloud(**cloud_tls(pki))
    assert f"gRPC on 127.0.0.1:{server.grpc_port}: TLS" in caplog.text
    assert f"REST on 127.0.0.1:{server.http_port}: TLS" in caplog.text
    port = server.grpc_port
    trusted = channel_credentials(pki.ca)
    assert recommend(client(port, trusted), "tls-1") == 4  # name override: cloud.tandem.test
    assert recommend(client(port, trusted, name=None), "tls-2") == 4  # the IP in the SAN
    for refused in (
        client(port, None),  # plaintext to a TLS port
        client(port, channel_credentials(pki.other_ca)),  # a CA we do not trust
        client(port, trusted, name="other.tandem.test"),  # a name the certificate lacks
    ):
        with pytest.raises(CloudError) as err:
            recommend(refused, "tls-3")
        assert err.value.kind == "unavailable"

    https = f"https://127.0.0.1:{server.http_port}/v1/recommend"
    body = {"device_id": "tls-4", "k": 3}
    headers = {"x-device-token": device_token(SECRET, "tls-4")}
    ok = httpx.post(https, json=body, headers=headers, timeout=5,
                    verify=ssl.create_default_context(cafile=pki.ca))  # fmt: skip
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(https, json=body, headers=headers, timeout=5,
                   verify=ssl.create_default_context(cafile=pki.other_ca))  # fmt: skip
    with pytest.raises(httpx.TransportError):  # plaintext HTTP to the TLS port
        httpx.post(https.replace("https:", "http:"), json=body, headers=headers, timeout=5)


def test_mutual_tls_refuses_a_client_without_a_certificate(
    start_cloud: StartCloud, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        server, _ = start_cloud(**cloud_tls(pki, grpc_tls_client_ca_file=pki.ca))
    assert "mutual TLS (client certificates required)" in caplog.text
    with pytest.raises(CloudError) as err:
        recommend(client(server.grpc_port, channel_credentials(pki.ca)), "m-1")
    assert err.value.kind == "unavailable"
    assert recommend(client(server.grpc_port, channel_credentials(pki.ca, pki)), "m-2") == 4


def test_expired_unknown_kid_and_legacy_tokens_are_refused_over_tls(
    start_cloud: StartCloud, pki: Pki
) -> None:
    """Mid-rotation: the ring holds k1 (new, current) and k0 (old); both pass, nothing else."""
    ring = f"k1:{NEW_SECRET},k0:{SECRET.decode()}"
    server, _ = start_cloud(**cloud_tls(pki, auth_keys=ring))
    port, new = server.grpc_port, NEW_SECRET.encode()
    assert recommend(client(port, channel_credentials(pki.ca)), "r-0") == 4  # k0, the old key
    k1 = CloudClient(
        f"127.0.0.1:{port}", 5.0, lambda d: device_token(new, d, kid="k1"),
        credentials=channel_credentials(pki.ca), server_name=SERVER_NAME,
    )  # fmt: skip
    assert recommend(k1, "r-1") == 4

    an_hour_ago = int(time.time()) - 3600  # far beyond the 30 s skew allowance
    cases = {
        mint_token(new, "r-2", "k1", an_hour_ago): "x-device-token expired ",
        mint_token(new, "r-2", "k9", int(time.time()) + 600): "unknown key id 'k9'",
        mint_token(SECRET, "r-2", "k1", int(time.time()) + 600): "does not match device_id",
        legacy_token(SECRET, "r-2"): "legacy x-device-token refused",
    }
    https = f"https://127.0.0.1:{server.http_port}/v1/recommend"
    verify = ssl.create_default_context(cafile=pki.ca)
    for token, why in cases.items():
        err = raw_recommend(port, token, "r-2", pki.ca)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and why in (err.details() or "")
        reply = httpx.post(https, json={"device_id": "r-2", "k": 3}, timeout=5, verify=verify,
                           headers={"x-device-token": token})  # fmt: skip
        assert reply.status_code == 401 and why in reply.json()["detail"]


def test_the_agent_talks_tls_to_the_cloud_and_serves_https(
    start_cloud: StartCloud, start_agent: Any, pki: Pki
) -> None:
    cloud, services = start_cloud(**cloud_tls(pki))
    url, _ = start_agent(
        cloud.grpc_port, cloud_tls=True, cloud_ca_file=pki.ca, cloud_tls_server_name=SERVER_NAME,
        http_tls_cert_file=pki.server_cert, http_tls_key_file=pki.server_key,
        request_budget=0.0, initial_threshold=1e9, exploration=0.0, events_forward=False,
        token_lifetime_s=600,
    )  # fmt: skip
    https = url.replace("http:", "https:")
    verify = ssl.create_default_context(cafile=pki.ca)
    page = app_post(f"{https}/v1/recommend", json={"device_id": "ph-1", "k": 4}, timeout=5,
                      verify=verify)  # fmt: skip
    assert page.status_code == 200, page.text
    assert page.json()["source"] == "cloud" and len(page.json()["items"]) == 4
    status = httpx.get(f"{https}/v1/status", timeout=5, verify=verify).json()
    served = services.device_models.registries["reranker"].current()  # fetched over TLS too
    assert served is not None and status["reranker_version"] == served.version
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v1/status", timeout=5)  # plaintext to the agent's TLS port
