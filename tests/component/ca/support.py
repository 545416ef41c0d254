"""Helpers for the CA component tests: a CA server in the test's event loop and a raw client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from google.protobuf import struct_pb2

from meshsec._proto import istio_ca_pb2, istio_ca_pb2_grpc
from meshsec.ca.assembly import load_material
from meshsec.ca.authn import Authenticator
from meshsec.ca.authority import CertificateAuthority
from meshsec.ca.grpc_server import RunningServer, start_grpc_server
from meshsec.ca.ledger import LEDGER_FILE, IssuedRecord, load_issued
from meshsec.ca.serving import ServingCertificates
from meshsec.cluster import ClusterSigner, TokenRequest, mint_token
from meshsec.config.ca import CaSettings
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    KeySpec,
    PrivateKey,
    build_csr,
    encode_csr_pem,
    generate_private_key,
    parse_certificates_pem,
)

SERVER_NAME = "istiod.istio-system.svc"


def make_settings(data_dir: Path, clusters: Sequence[Path], **overrides: Any) -> CaSettings:
    base = CaSettings(
        data_dir=data_dir,
        listen="127.0.0.1:0",
        mtls_listen="127.0.0.1:0",
        monitoring="127.0.0.1:0",
        clusters=tuple(str(c) for c in clusters),
    )
    return replace(base, **overrides)


@dataclass
class CaUnderTest:
    settings: CaSettings
    running: RunningServer
    serving: ServingCertificates | None
    root_pem: bytes

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def mtls_address(self) -> str:
        assert self.running.mtls_port is not None
        return f"127.0.0.1:{self.running.mtls_port}"

    def issued(self) -> list[IssuedRecord]:
        self.running.ledger.flush()
        return list(load_issued(self.settings.data_dir / LEDGER_FILE))

    def counter(self, name: str) -> int:
        return self.running.counters.value(name)


async def start_ca(
    settings: CaSettings, *, authenticators: Sequence[Authenticator] | None = None
) -> CaUnderTest:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    material = load_material(settings, now=now)
    authority = CertificateAuthority(
        material,
        default_ttl=settings.default_workload_cert_ttl,
        max_ttl=settings.max_workload_cert_ttl,
    )
    serving = (
        None
        if settings.plaintext
        else ServingCertificates(
            authority, ttl=settings.serving_cert_ttl, now=lambda: datetime.now(UTC)
        )
    )
    running = await start_grpc_server(
        settings, material=material, serving=serving, authenticators=authenticators
    )
    return CaUnderTest(settings, running, serving, material.root_bundle_pem.encode())


def new_csr(
    spiffe_id: str | None = None, *, key_spec: KeySpec = KeySpec.EC_P256
) -> tuple[PrivateKey, str]:
    key = generate_private_key(key_spec)
    sid = SpiffeId.parse(spiffe_id) if spiffe_id else None
    return key, encode_csr_pem(build_csr(key, sid)).decode()


def token_for(
    signer: ClusterSigner,
    namespace: str = "default",
    service_account: str = "sleep",
    *,
    audiences: tuple[str, ...] = ("istio-ca",),
    now: datetime | None = None,
    ttl: timedelta = timedelta(hours=1),
) -> str:
    req = TokenRequest(namespace, service_account, audiences, ttl)
    return mint_token(signer, req, now=now or datetime.now(UTC))


@dataclass
class CallResult:
    code: grpc.StatusCode
    details: str
    chain: list[str]

    @property
    def leaf(self) -> x509.Certificate:
        return parse_certificates_pem(self.chain[0])[0]


async def call(
    ca: CaUnderTest,
    csr: str,
    *,
    token: str | None = None,
    cluster_id: str | None = None,
    ttl_seconds: int = 0,
    metadata: dict[str, str] | None = None,
    client_cert: tuple[bytes, bytes] | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> CallResult:
    """One CreateCertificate over TLS (or plaintext) with full control of what is sent.

    With ``client_cert`` (key PEM, chain PEM) the call goes to the CA's client-certificate port.
    """
    if ca.serving is None:
        channel = grpc.aio.insecure_channel(ca.address)
    else:
        key_pem, chain_pem = client_cert if client_cert else (None, None)
        creds = grpc.ssl_channel_credentials(ca.root_pem, key_pem, chain_pem)
        channel = grpc.aio.secure_channel(
            ca.mtls_address if client_cert else ca.address,
            creds,
            options=[("grpc.ssl_target_name_override", SERVER_NAME)],
        )
    md: list[tuple[str, str]] = list(headers)
    if token is not None:
        md.append(("authorization", f"Bearer {token}"))
    if cluster_id is not None:
        md.append(("clusterid", cluster_id))
    struct = struct_pb2.Struct()
    struct.update(metadata or {})
    request = istio_ca_pb2.IstioCertificateRequest(
        csr=csr, validity_duration=ttl_seconds, metadata=struct
    )
    try:
        stub = istio_ca_pb2_grpc.IstioCertificateServiceStub(channel)
        try:
            response = await stub.CreateCertificate(request, metadata=tuple(md), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return CallResult(exc.code(), exc.details() or "", [])
        return CallResult(grpc.StatusCode.OK, "", list(response.cert_chain))
    finally:
        await channel.close(None)
