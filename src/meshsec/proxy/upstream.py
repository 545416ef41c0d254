"""Upstream connections: client TLS per destination and the connector the listeners share.

Each destination is resolved by a :class:`ServiceResolver` (host, port → endpoints with their
service accounts) and gets its client TLS from a :class:`ClientTlsPolicy` (the resolved
DestinationRule / auto mTLS, istio-contracts §5.2–5.3):

* ``ISTIO_MUTUAL`` — the mesh SVID, the mesh bundle, SNI ``outbound_.<port>_._.<host>`` (or the
  rule's ``sni``), ALPN ``istio-peer-exchange, istio``; **secure naming**: the server's SPIFFE ID
  must be one of the rule's ``subjectAltNames``, else the endpoints' service accounts expanded to
  every trust-domain alias (§5.4). A mismatch fails the connection with a log line naming the
  expected and the presented identities. Auto-detected ISTIO_MUTUAL goes plaintext to endpoints
  not marked as mesh endpoints (``security.istio.io/tlsMode=istio``).
* ``SIMPLE`` / ``MUTUAL`` — file certificates; server verification by ``caCertificates`` (host
  name check against the SNI, or the rule's ``subjectAltNames``); none without a CA or with
  ``insecureSkipVerify`` (logged once per destination).
* ``DISABLE`` — plaintext.

The listeners that accept the application's connections are in :mod:`meshsec.proxy.outbound`.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography import x509

from meshsec.core.identity import SpiffeId, TrustDomainSet
from meshsec.core.identity.errors import IdentityError
from meshsec.proxy.errors import (
    PeerRejected,
    SecureNamingError,
    UpstreamUnavailable,
)
from meshsec.proxy.pump import Link, PumpLimits
from meshsec.proxy.tls import (
    TlsContexts,
    build_file_client_context,
    parse_peer_identity,
    verify_secure_naming,
)
from meshsec.proxy.tls_transport import connect_tls

# Outbound connection events keep the logger name operators filter on.
log = logging.getLogger("meshsec.proxy.outbound")


class ClientTlsMode(enum.Enum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    service_accounts: tuple[str, ...] = ()  # SPIFFE IDs the workload runs as
    mesh: bool = True  # carries security.istio.io/tlsMode=istio (auto mTLS may use TLS)


@dataclass(frozen=True)
class ClientTlsSettings:
    mode: ClientTlsMode
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    client_certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None
    insecure_skip_verify: bool = False
    auto: bool = False  # decided by auto mTLS, not written in a DestinationRule


class ServiceResolver(Protocol):
    def resolve(self, host: str, port: int) -> Sequence[Endpoint]:
        """Endpoints of ``host:port`` (empty if the service is unknown or has none)."""
        ...


class ClientTlsPolicy(Protocol):
    def client_tls(self, host: str, port: int) -> ClientTlsSettings:
        """The effective client TLS settings towards ``host:port``."""
        ...


@dataclass(frozen=True)
class OutboundOptions:
    trust_domains: TrustDomainSet | None
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    limits: PumpLimits = field(default_factory=PumpLimits)
    backlog: int = 1024
    reuse_port: bool = False  # SO_REUSEPORT: worker processes share the listen port


@dataclass(frozen=True)
class Upstream:
    """What was connected: for metrics and logs."""

    destination: str
    principal: str
    mtls: bool


def verify_subject_alt_names(der: bytes | None, allowed: Sequence[str], destination: str) -> None:
    """SIMPLE/MUTUAL with ``subjectAltNames``: one DNS or URI SAN must equal an allowed value."""
    if not der:
        raise PeerRejected("server presented no certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [
            *san.get_values_for_type(x509.DNSName),
            *san.get_values_for_type(x509.UniformResourceIdentifier),
        ]
    except (ValueError, x509.ExtensionNotFound):
        names = []
    if not any(name in allowed for name in names):
        raise SecureNamingError(destination, allowed, ", ".join(names) or "(no SAN)")


def istio_sni(host: str, port: int, subset: str = "") -> str:
    """Envoy's cluster SNI for ISTIO_MUTUAL: ``outbound_.<port>_.<subset>_.<host>``."""
    return f"outbound_.{port}_.{subset}_.{host}"


def expand_sans(sans: Sequence[str], trust_domains: TrustDomainSet | None) -> tuple[str, ...]:
    """Every SAN in every equivalent trust domain (Istio ``ExpandWithTrustDomains``)."""
    out: list[str] = []
    for san in sans:
        variants: tuple[str, ...] = (san,)
        if trust_domains is not None:
            try:
                variants = tuple(str(i) for i in trust_domains.expand(SpiffeId.parse(san)))
            except IdentityError:
                variants = (san,)
        for v in variants:
            if v not in out:
                out.append(v)
    return tuple(out)


class UpstreamConnector:
    """Resolve, pick an endpoint, connect with the right client TLS, enforce secure naming."""

    def __init__(
        self,
        resolver: ServiceResolver,
        policy: ClientTlsPolicy,
        tls: TlsContexts,
        options: OutboundOptions,
    ) -> None:
        self.resolver = resolver
        self.policy = policy
        self.tls = tls
        self.options = options
        self._rr = itertools.count()
        self._file_contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
        self._warned: set[str] = set()

    async def connect(self, link: Link, host: str, port: int) -> Upstream:
        destination = f"{host}:{port}"
        endpoints = self.resolver.resolve(host, port)
        if not endpoints:
            raise UpstreamUnavailable(destination, "no endpoints (unknown service?)")
        endpoint = endpoints[next(self._rr) % len(endpoints)]
        settings = self.policy.client_tls(host, port)
        ctx, sni, sans = self._client_tls(settings, endpoint, host, port)
        loop = asyncio.get_running_loop()
        try:
            if ctx is None:
                await asyncio.wait_for(
                    loop.create_connection(link.new_upstream, endpoint.address, endpoint.port),
                    self.options.connect_timeout,
                )
            else:
                await asyncio.wait_for(
                    connect_tls(
                        endpoint.address,
                        endpoint.port,
                        link.new_upstream,
                        ctx,
                        server_hostname=sni,
                        handshake_timeout=self.options.handshake_timeout,
                    ),
                    self.options.connect_timeout + self.options.handshake_timeout,
                )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) else str(exc) or "timed out"
            raise UpstreamUnavailable(
                f"{destination} ({endpoint.address}:{endpoint.port})", reason
            ) from None
        if ctx is None:
            return Upstream(destination, "", False)
        assert link.up is not None
        assert link.up.transport is not None
        ssl_object = link.up.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if settings.mode is not ClientTlsMode.ISTIO_MUTUAL:
            verified = settings.ca_certificates is not None and not settings.insecure_skip_verify
            if verified and settings.subject_alt_names:
                try:
                    verify_subject_alt_names(der, settings.subject_alt_names, destination)
                except PeerRejected as exc:
                    log.warning("outbound %s: %s", destination, exc)
                    _drop_upstream(link)
                    raise
            return Upstream(destination, "", True)
        try:
            if not der:
                raise PeerRejected("server presented no certificate")
            identity = parse_peer_identity(der)
            verify_secure_naming(identity, sans, destination)
        except PeerRejected as exc:
            log.warning("outbound %s: %s", destination, exc)
            _drop_upstream(link)
            raise
        return Upstream(destination, identity.principal, True)

    def _client_tls(
        self, settings: ClientTlsSettings, endpoint: Endpoint, host: str, port: int
    ) -> tuple[ssl.SSLContext | None, str | None, tuple[str, ...]]:
        mode = settings.mode
        if mode is ClientTlsMode.DISABLE:
            return None, None, ()
        if mode is ClientTlsMode.ISTIO_MUTUAL:
            if settings.auto and not endpoint.mesh:
                return None, None, ()
            sans = settings.subject_alt_names or endpoint.service_accounts
            return (
                self.tls.current.client_istio,
                settings.sni or istio_sni(host, port),
                expand_sans(sans, self.options.trust_domains),
            )
        return self._file_context(settings, host), settings.sni or host, ()

    def _file_context(self, settings: ClientTlsSettings, host: str) -> ssl.SSLContext:
        verify = settings.ca_certificates is not None and not settings.insecure_skip_verify
        if not verify and host not in self._warned:
            self._warned.add(host)
            log.warning("outbound %s: %s without server verification", host, settings.mode.value)
        key = (
            settings.client_certificate,
            settings.private_key,
            settings.ca_certificates if verify else None,
            _mtime(settings.client_certificate),
            _mtime(settings.ca_certificates),
        )
        ctx = self._file_contexts.get(key)
        if ctx is None:
            ctx = build_file_client_context(
                certificate=settings.client_certificate
                if settings.mode is ClientTlsMode.MUTUAL
                else None,
                private_key=settings.private_key,
                ca_certificates=settings.ca_certificates if verify else None,
                check_hostname=verify and not settings.subject_alt_names,
                params=self.tls.params,
            )
            self._file_contexts[key] = ctx
        return ctx


def _drop_upstream(link: Link) -> None:
    """Abort a refused server's connection without ending the client's: an HTTP proxy still
    answers the client (503), a TCP listener closes it itself."""
    side = link.up
    link.detach_upstream()
    if side is not None:
        side.abort()


def _mtime(path: Path | None) -> float:
    try:
        return path.stat().st_mtime if path is not None else 0.0
    except OSError:
        return 0.0
