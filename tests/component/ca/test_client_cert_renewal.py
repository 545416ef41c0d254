"""Client-certificate renewal over the CA's real mTLS port, with the chains agents really present.

grpc's server-side ``auth_context`` gives the peer leaf as ``x509_pem_cert`` and the *rest* of the
presented chain as ``x509_pem_cert_chain`` (without the leaf) — the first test pins that down, the
others renew with leaf+root (self-signed CA, what the agent's ``cert_chain_pem`` holds) and with
leaf+ca-cert (a plugged-in intermediate).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshsec.agent.caclient import CaClient, RenewingCaClient
from meshsec.agent.secret import build_secret_from_ca_response
from meshsec.ca import service
from meshsec.core.pki import KeySpec, generate_private_key, parse_certificates_pem
from tests.component.ca.conftest import Clusters
from tests.component.ca.support import (
    SERVER_NAME,
    CaUnderTest,
    call,
    make_settings,
    new_csr,
    start_ca,
    token_for,
)
from tests.testca import TestCA

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
ADMIN = "spiffe://cluster.local/ns/kube-system/sa/admin"


def _uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
async def plugged_ca(tmp_path: Path, clusters: Clusters) -> AsyncIterator[CaUnderTest]:
    inter = TestCA().intermediate("cluster1")
    cacerts = inter.write_cacerts(tmp_path / "cacerts")
    settings = make_settings(tmp_path / "data", clusters.trusted_dirs, cacerts=cacerts)
    running = await start_ca(settings)
    try:
        yield running
    finally:
        await running.running.stop(grace=0)


def _cacerts(ca: CaUnderTest) -> Path:
    assert ca.settings.cacerts is not None
    return ca.settings.cacerts


async def _first_certificate(ca: CaUnderTest, clusters: Clusters) -> tuple[bytes, list[str]]:
    key, csr = new_csr(SLEEP)
    first = await call(ca, csr, token=token_for(clusters.cluster1, "default", "sleep"))
    assert first.code is grpc.StatusCode.OK, first.details
    return _key_pem(key), first.chain


async def test_grpc_auth_context_chain_does_not_hold_the_leaf(
    ca: CaUnderTest, clusters: Clusters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What grpc really hands the servicer (the reason ``_peer_chain`` is written as it is)."""
    seen: list[dict[str, list[bytes]]] = []
    original = service._peer_chain

    def spy(context: Any) -> tuple[bytes, ...]:
        seen.append(dict(context.auth_context()))
        return original(context)

    monkeypatch.setattr(service, "_peer_chain", spy)
    key_pem, chain = await _first_certificate(ca, clusters)
    presented = "".join(chain).encode()  # leaf + root
    renewed = await call(ca, new_csr()[1], client_cert=(key_pem, presented))
    auth = seen[-1]
    leaf = parse_certificates_pem(chain[0])[0]
    [peer_leaf] = auth["x509_pem_cert"]
    assert parse_certificates_pem(peer_leaf) == [leaf]
    rest = [c for pem in auth.get("x509_pem_cert_chain", []) for c in parse_certificates_pem(pem)]
    assert leaf not in rest
    assert rest == parse_certificates_pem(chain[1])  # the root only
    assert renewed.code is grpc.StatusCode.OK, renewed.details


async def test_renewal_presenting_leaf_and_root_self_signed(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    key_pem, chain = await _first_certificate(ca, clusters)
    presented = "".join(chain).encode()  # [leaf, root]: the whole CA response
    renewed = await call(ca, new_csr(ADMIN)[1], client_cert=(key_pem, presented))
    assert renewed.code is grpc.StatusCode.OK, renewed.details
    assert _uris(renewed.leaf) == [SLEEP]
    assert [r.authenticator for r in ca.issued()][-1] == "ClientCertAuthenticator"


async def test_renewal_presenting_leaf_and_ca_cert_plugged_in(
    plugged_ca: CaUnderTest, clusters: Clusters
) -> None:
    key_pem, chain = await _first_certificate(plugged_ca, clusters)
    # Istio's layout: leaf, cert-chain.pem (ca-cert, root), root bundle
    ca_cert = parse_certificates_pem((_cacerts(plugged_ca) / "ca-cert.pem").read_bytes())
    presented = "".join(chain[:2]).encode()  # leaf + ca-cert
    assert parse_certificates_pem(chain[1]) == ca_cert
    renewed = await call(plugged_ca, new_csr()[1], client_cert=(key_pem, presented))
    assert renewed.code is grpc.StatusCode.OK, renewed.details
    assert _uris(renewed.leaf) == [SLEEP]
    everything = "".join(chain).encode()  # leaf + ca-cert + root
    again = await call(plugged_ca, new_csr()[1], client_cert=(key_pem, everything))
    assert again.code is grpc.StatusCode.OK, again.details


async def test_agent_ca_client_renews_with_its_workload_secret(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    """The agent's own path: WorkloadSecret.cert_chain_pem (leaf+root) over RenewingCaClient."""
    key = generate_private_key(KeySpec.EC_P256)
    from meshsec.core.pki import build_csr, encode_csr_pem

    csr = encode_csr_pem(build_csr(key, None))
    token: list[str | None] = [token_for(clusters.cluster1, "default", "sleep")]
    current: list[tuple[bytes, bytes] | None] = [None]

    def build(address: str) -> CaClient:
        return CaClient(
            address,
            root_pem=ca.root_pem,
            server_name=SERVER_NAME,
            client_identity=lambda: current[0],
        )

    client = RenewingCaClient(
        build(ca.address),
        token_provider=lambda: token[0],
        mtls=build(ca.mtls_address),
        has_client_identity=lambda: current[0] is not None,
    )
    try:
        first = await client.sign(csr, timedelta(hours=1))
        secret = build_secret_from_ca_response(first, key, now=datetime.now(UTC))
        assert len(parse_certificates_pem(secret.cert_chain_pem)) == 2  # leaf + root
        current[0] = (secret.key_pem, secret.cert_chain_pem)
        token[0] = None  # no token any more: renewal must ride on the certificate
        renewed = await client.sign(encode_csr_pem(build_csr(key, None)), timedelta(hours=1))
    finally:
        await client.close()
    leaf = parse_certificates_pem(renewed[0])[0]
    assert _uris(leaf) == [SLEEP]
    assert [r.authenticator for r in ca.issued()] == [
        "KubeJWTAuthenticator",
        "ClientCertAuthenticator",
    ]
