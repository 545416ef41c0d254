"""A small Istio-compatible CA gRPC server for agent tests: real TLS, real signing (TestCA).

Serves ``/istio.v1.auth.IstioCertificateService/CreateCertificate`` on loopback with a serving
certificate for ``istiod.istio-system.svc``. Callers authenticate with ``authorization: Bearer
<token>`` (tokens map to SPIFFE IDs) or with a client certificate issued by the same CA. Every
call's headers and outcome are recorded. ``stop()``/``start()`` on the same port simulate an
outage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from cryptography import x509

from meshsec._proto import istio_ca_pb2, istio_ca_pb2_grpc
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    encode_certificate_pem,
    encode_private_key_pem,
    generate_private_key,
    issue_server_certificate,
    random_serial,
)
from meshsec.runtime.clock import Clock
from tests.testca import TestCA

SERVER_NAME = "istiod.istio-system.svc"


@dataclass(frozen=True)
class CaCall:
    authorization: str | None
    cluster_id: str | None
    peer_identity: str | None
    ttl_seconds: int
    cert_signer: str | None
    outcome: str


class FakeCaServer(istio_ca_pb2_grpc.IstioCertificateServiceServicer):  # type: ignore[misc]
    def __init__(self, ca: TestCA, *, tokens: dict[str, str], clock: Clock) -> None:
        self.ca = ca
        self.tokens = tokens
        self.clock = clock
        self.calls: list[CaCall] = []
        self.port = 0
        self.mtls_port = 0
        self._server: grpc.aio.Server | None = None
        key = generate_private_key()
        cert = issue_server_certificate(
            [SERVER_NAME],
            key.public_key(),
            ca.issuer,
            now=clock.now(),
            ttl=timedelta(days=30),
            serial=random_serial(os.urandom(16)),
        )
        self._key_pem = encode_private_key_pem(key)
        self._chain_pem = encode_certificate_pem(cert) + ca.cert_chain_pem

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mtls_address(self) -> str:
        return f"127.0.0.1:{self.mtls_port}"

    async def start(self) -> str:
        server = grpc.aio.server()
        istio_ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(self, server)
        # grpcio cannot request a client certificate optionally: token callers use one port,
        # client-certificate callers another (as meshsec's CA does)
        credentials = grpc.ssl_server_credentials([(self._key_pem, self._chain_pem)])
        self.port = server.add_secure_port(f"127.0.0.1:{self.port}", credentials)
        mtls = grpc.ssl_server_credentials(
            [(self._key_pem, self._chain_pem)],
            root_certificates=self.ca.root_pem,
            require_client_auth=True,
        )
        self.mtls_port = server.add_secure_port(f"127.0.0.1:{self.mtls_port}", mtls)
        await server.start()
        self._server = server
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    async def CreateCertificate(
        self, request: istio_ca_pb2.IstioCertificateRequest, context: Any
    ) -> istio_ca_pb2.IstioCertificateResponse:
        headers = dict(context.invocation_metadata() or ())
        authorization = headers.get("authorization")
        peer = _peer_identity(context)
        signer = request.metadata.fields.get("CertSigner")
        identity: str | None = None
        if authorization and authorization.startswith("Bearer "):
            identity = self.tokens.get(authorization[len("Bearer ") :])
        if identity is None and peer is not None:
            identity = peer
        outcome = "signed" if identity else "UNAUTHENTICATED"
        self.calls.append(
            CaCall(
                authorization,
                headers.get("clusterid"),
                peer,
                request.validity_duration,
                signer.string_value if signer is not None else None,
                outcome,
            )
        )
        if identity is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "request authenticate failure")
        chain = self.ca.sign_csr(
            request.csr,
            SpiffeId.parse(str(identity)),
            timedelta(seconds=request.validity_duration),
            now=self.clock.now(),
        )
        return istio_ca_pb2.IstioCertificateResponse(cert_chain=chain)


def _peer_identity(context: Any) -> str | None:
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    cert = x509.load_pem_x509_certificate(pems[0])
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else None
