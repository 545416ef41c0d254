"""Certificates over Envoy SDS v3 from the node agent's Unix socket (what Envoy does in a pod).

Subscribes ``default`` (``tls_certificate``: chain + key) and ``ROOTCA``
(``validation_context.trusted_ca``) on one ``StreamSecrets`` stream, like Envoy's ``sds-grpc``
cluster. Every response is ACKed (``version_info`` + ``response_nonce``) once its secrets turned
into a usable X509Svid/TrustBundle pair and were applied; one that cannot be used is NACKed with
``error_detail`` and the current certificates are kept. A broken stream is re-opened with
exponential backoff on the injected clock; what was applied stays in force meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2

from meshsec.core.pki import (
    PkiError,
    TrustBundle,
    X509Svid,
    parse_certificates_pem,
    parse_private_key_pem,
)
from meshsec.core.pki.svid import parse_svid_chain
from meshsec.proxy.errors import TlsMaterialError
from meshsec.runtime.clock import Clock

log = logging.getLogger("meshsec.proxy.sds")

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105
DEFAULT = "default"
ROOTCA = "ROOTCA"
INVALID_ARGUMENT = 3


@dataclass
class _Held:
    chain_pem: bytes | None = None
    key_pem: bytes | None = None
    roots_pem: bytes | None = None


def build_svid(chain_pem: bytes, key_pem: bytes) -> X509Svid:
    """The agent sends every PEM the CA returned (leaf … root): keep leaf + intermediates."""
    certs = parse_certificates_pem(chain_pem, what="SDS default certificate_chain")
    chain = [certs[0], *(c for c in certs[1:] if c.subject != c.issuer)]
    key = parse_private_key_pem(key_pem)
    return X509Svid(parse_svid_chain(chain), tuple(chain), key)


class SdsSecretSource:
    def __init__(
        self,
        socket_path: Path,
        on_update: Callable[[X509Svid, TrustBundle], None],
        *,
        clock: Clock,
        node_id: str = "sidecar~127.0.0.1~meshsec-proxy.default~default.svc.cluster.local",
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.socket_path = socket_path
        self.on_update = on_update
        self.clock = clock
        self.node = base_pb2.Node(id=node_id)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.applied = 0
        self.nacked = 0
        self._held = _Held()

    async def run(self) -> None:
        """Runs until cancelled."""
        delay = self.backoff_initial
        while True:
            try:
                await self._stream_once()
                delay = self.backoff_initial
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "SDS stream to %s failed: %s %s (retrying in %.1fs)",
                    self.socket_path,
                    exc.code().name,
                    exc.details(),
                    delay,
                )
            await self.clock.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    def _request(
        self,
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> discovery_pb2.DiscoveryRequest:
        return discovery_pb2.DiscoveryRequest(
            version_info=version,
            node=self.node,
            resource_names=[DEFAULT, ROOTCA],
            type_url=SECRET_TYPE_URL,
            response_nonce=nonce,
            error_detail=status_pb2.Status(code=INVALID_ARGUMENT, message=error) if error else None,
        )

    async def _stream_once(self) -> None:
        async with grpc.aio.insecure_channel(f"unix:{self.socket_path}") as channel:
            stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
            call = stub.StreamSecrets()
            await call.write(self._request())
            acked_version = ""
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                    log.warning("SDS stream ended by the agent; re-opening")
                    return
                try:
                    self._apply(response)
                except (TlsMaterialError, PkiError, ValueError) as exc:
                    self.nacked += 1
                    log.warning("SDS: refusing secrets version %s: %s", response.version_info, exc)
                    await call.write(
                        self._request(version=acked_version, nonce=response.nonce, error=str(exc))
                    )
                    continue
                acked_version = response.version_info
                await call.write(self._request(version=acked_version, nonce=response.nonce))

    def _apply(self, response: discovery_pb2.DiscoveryResponse) -> None:
        held = _Held(self._held.chain_pem, self._held.key_pem, self._held.roots_pem)
        for item in response.resources:
            secret = secret_pb2.Secret()
            if not item.Unpack(secret):
                raise ValueError(f"resource of type {item.type_url} is not a Secret")
            if secret.name == DEFAULT and secret.HasField("tls_certificate"):
                held.chain_pem = secret.tls_certificate.certificate_chain.inline_bytes
                held.key_pem = secret.tls_certificate.private_key.inline_bytes
            elif secret.name == ROOTCA and secret.HasField("validation_context"):
                held.roots_pem = secret.validation_context.trusted_ca.inline_bytes
            else:
                raise ValueError(f"unexpected secret {secret.name!r}")
        if held.chain_pem is None or held.key_pem is None or held.roots_pem is None:
            self._held = held  # wait for the other half
            return
        svid = build_svid(held.chain_pem, held.key_pem)
        bundle = TrustBundle.parse_pem(held.roots_pem, what="SDS ROOTCA trusted_ca")
        self.on_update(svid, bundle)
        self._held = held
        self.applied += 1
        log.info(
            "SDS: applied %s serial %s (expires %s), %d root(s)",
            svid.spiffe_id,
            svid.serial_hex,
            svid.not_after.isoformat(),
            len(bundle),
        )
