"""Client of the CA's ``IstioCertificateService/CreateCertificate`` (what pilot-agent's Citadel
client does).

* TLS with the mesh root and server name ``istiod.istio-system.svc`` (the CA's serving
  certificate carries it), optionally a client certificate (renewal with an existing mesh cert);
  plaintext only when asked.
* Per call: ``authorization: Bearer <token>`` when a token is given (none → rely on the client
  certificate), ``clusterid`` when a cluster id is configured.
* Errors come out as :class:`meshsec.agent.errors.UpstreamError` with the gRPC status name
  (``retryable`` tells Istio's retry set). After any error the channel is rebuilt on the next call
  (Istio does this to pick up a rotated CA root).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import struct_pb2

from meshsec._proto import istio_ca_pb2, istio_ca_pb2_grpc
from meshsec.agent.errors import UpstreamError

DEFAULT_SERVER_NAME = "istiod.istio-system.svc"
CLUSTER_ID_HEADER = "clusterid"


@contextlib.contextmanager
def map_grpc_errors() -> Iterator[None]:
    """Turn a failed RPC into UpstreamError; anything else passes through untouched."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        raise UpstreamError(code.name, str(detail or "")) from None


def server_name_for(address: str) -> str:
    """Istio's rule: the host part of the CA address, or istiod's name for localhost / IPs."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if not host or "localhost" in host or host.replace(".", "").isdigit() or ":" in host:
        return DEFAULT_SERVER_NAME
    return host


class CaClient:
    """One channel to the CA; ``fetch_certificate_chain`` per CSR. Use as an async context."""

    def __init__(
        self,
        address: str,
        *,
        root_pem: bytes | None = None,
        server_name: str | None = None,
        plaintext: bool = False,
        cluster_id: str = "",
        client_key_pem: bytes | None = None,
        client_chain_pem: bytes | None = None,
        timeout: float = 10.0,
        extra_headers: Mapping[str, str] | None = None,
        token_provider: Callable[[], str | None] | None = None,
        client_identity: Callable[[], tuple[bytes, bytes] | None] | None = None,
        root_provider: Callable[[], bytes] | None = None,
        cert_signer: str = "",
    ) -> None:
        """``client_identity`` returns the current ``(key_pem, chain_pem)`` for client-cert
        renewal (the agent's own valid certificate); ``root_provider`` re-reads the CA root when
        the channel is rebuilt (after an error); both are consulted on every connect."""
        if not plaintext and root_pem is None and root_provider is None:
            raise ValueError("a root certificate is required for TLS (or pass plaintext=True)")
        if (client_key_pem is None) != (client_chain_pem is None):
            raise ValueError("client_key_pem and client_chain_pem go together")
        self.address = address
        self._root_pem = root_pem
        self._server_name = server_name or server_name_for(address)
        self._plaintext = plaintext
        self._cluster_id = cluster_id
        self._client_key = client_key_pem
        self._client_chain = client_chain_pem
        self._timeout = timeout
        self._extra = dict(extra_headers or {})
        self._token_provider = token_provider
        self._client_identity = client_identity
        self._root_provider = root_provider
        self._cert_signer = cert_signer
        self._channel_identity: tuple[bytes, bytes] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def _refresh_credentials(self) -> None:
        """Rebuild the channel when the client certificate to present has changed."""
        if self._client_identity is None:
            return
        identity = self._client_identity()
        if identity != self._channel_identity:
            await self.close()
            self._channel_identity = identity
            self._client_key, self._client_chain = identity if identity else (None, None)

    def _connect(self) -> Any:
        if self._stub is None:
            if self._root_provider is not None and not self._plaintext:
                self._root_pem = self._root_provider()
            if self._plaintext:
                self._channel = grpc.aio.insecure_channel(self.address)
            else:
                creds = grpc.ssl_channel_credentials(
                    root_certificates=self._root_pem,
                    private_key=self._client_key,
                    certificate_chain=self._client_chain,
                )
                options = [
                    ("grpc.ssl_target_name_override", self._server_name),
                    ("grpc.default_authority", self._server_name),
                ]
                self._channel = grpc.aio.secure_channel(self.address, creds, options=options)
            self._stub = istio_ca_pb2_grpc.IstioCertificateServiceStub(self._channel)
        return self._stub

    async def fetch_certificate_chain(
        self,
        csr_pem: bytes | str,
        *,
        token: str | None,
        ttl: timedelta | None = None,
        cert_signer: str | None = None,
    ) -> list[str]:
        """The CA's answer: [leaf, intermediates..., root bundle]; UpstreamError otherwise."""
        headers: list[tuple[str, str]] = [(k.lower(), v) for k, v in self._extra.items()]
        if token and token.strip():
            headers.append(("authorization", f"Bearer {token.strip()}"))
        if self._cluster_id:
            headers.append((CLUSTER_ID_HEADER, self._cluster_id))
        metadata = struct_pb2.Struct()
        if cert_signer is not None:
            metadata.update({"CertSigner": cert_signer})
        request = istio_ca_pb2.IstioCertificateRequest(
            csr=csr_pem.decode() if isinstance(csr_pem, bytes) else csr_pem,
            validity_duration=int(ttl.total_seconds()) if ttl is not None else 0,
            metadata=metadata,
        )
        await self._refresh_credentials()
        stub = self._connect()
        try:
            with map_grpc_errors():
                response = await stub.CreateCertificate(
                    request, metadata=tuple(headers), timeout=self._timeout
                )
        except UpstreamError:
            await self.close()  # rebuild the connection next time
            raise
        chain = list(response.cert_chain)
        if len(chain) <= 1:
            raise UpstreamError("INTERNAL", "invalid empty CertChain")
        return chain

    async def sign(self, csr_pem: bytes, ttl: timedelta) -> list[str]:
        """The agent's ``CaClient`` protocol: the token is re-read on every call (Istio)."""
        token = self._token_provider() if self._token_provider is not None else None
        return await self.fetch_certificate_chain(
            csr_pem, token=token, ttl=ttl, cert_signer=self._cert_signer
        )

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(None)

    async def __aenter__(self) -> CaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def fetch_certificate_chain(
    address: str,
    csr_pem: bytes | str,
    *,
    token: str | None,
    root_pem: bytes | None,
    cluster_id: str = "",
    ttl: timedelta | None = None,
    plaintext: bool = False,
    server_name: str | None = None,
) -> list[str]:
    """One-shot helper: open a channel, ask for a certificate, close."""
    async with CaClient(
        address,
        root_pem=root_pem,
        plaintext=plaintext,
        cluster_id=cluster_id,
        server_name=server_name,
    ) as client:
        return await client.fetch_certificate_chain(csr_pem, token=token, ttl=ttl)


class RenewingCaClient:
    """The agent's CA client (its ``CaClient`` protocol): token auth, or client-cert renewal.

    Each call re-reads the token. With a token, the call goes to ``CA_ADDR`` (presenting the
    current certificate too, for CAs that ask for one). Without a token but with a valid
    certificate, it goes to the CA's client-certificate port when one is configured
    (``MESHSEC_CA_MTLS_ADDR``; grpcio servers cannot *optionally* request client certificates,
    so meshsec's CA serves mTLS callers on their own port), else to ``CA_ADDR`` anyway.
    """

    def __init__(
        self,
        main: CaClient,
        *,
        token_provider: Callable[[], str | None],
        mtls: CaClient | None = None,
        has_client_identity: Callable[[], bool] = lambda: False,
        cert_signer: str = "",
    ) -> None:
        self._main = main
        self._mtls = mtls
        self._token_provider = token_provider
        self._has_client_identity = has_client_identity
        self._cert_signer = cert_signer

    async def sign(self, csr_pem: bytes, ttl: timedelta) -> list[str]:
        token = self._token_provider()
        client = self._main
        if token is None and self._mtls is not None and self._has_client_identity():
            client = self._mtls
        return await client.fetch_certificate_chain(
            csr_pem, token=token, ttl=ttl, cert_signer=self._cert_signer or None
        )

    async def close(self) -> None:
        await self._main.close()
        if self._mtls is not None:
            await self._mtls.close()
