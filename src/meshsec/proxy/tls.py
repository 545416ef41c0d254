"""TLS contexts built from an X.509-SVID and a trust bundle, and the peer identity checks.

Parameters follow istio-contracts §5.1/§5.2 (what Envoy gets from istiod):

* TLS 1.2 – 1.3; TLS 1.2 ciphers ``ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384,
  ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384,
  AES128-GCM-SHA256`` (TLS 1.3 suites are OpenSSL's fixed AEAD set);
* server ALPN for TCP chains ``istio-peer-exchange, istio, h2, http/1.1``, for HTTP ports
  ``istio-peer-exchange, istio, http/1.1`` (we speak HTTP/1.1 only there);
  client ALPN for ``ISTIO_MUTUAL`` ``istio-peer-exchange, istio``;
* server side requires a client certificate (STRICT and the TLS half of PERMISSIVE), the chain
  is verified by OpenSSL against the bundle (every root in it), then the leaf must carry exactly
  one SPIFFE ID in the mesh trust domain or an alias (Envoy's ``match_subject_alt_names``
  prefixes); the client side verifies the chain the same way and then applies secure naming:
  the server's SPIFFE ID must be one of the allowed SANs.
* session resumption: TLS 1.3 stateless tickets and the TLS 1.2 session cache are on. With a
  ``ticket_secret`` (:class:`TlsContexts`; the proxy makes one per run, before its
  ``--concurrency`` workers fork) every worker's server contexts for the same port kind and
  trust bundle share their ticket keys (:func:`derive_ticket_keys`), so a ticket resumes on
  whichever worker takes the connection. The keys change every :data:`TICKET_KEY_PERIOD`
  (an epoch of the wall clock, so the workers change them together without talking:
  :meth:`TlsContexts.rotate_ticket_keys`), bounding what one leaked key decrypts or lets
  someone forge — a TLS 1.2 ticket holds the session's master secret and the peer's
  certificate — to one period; a ticket resumes only within the period it was issued in.
  A new bundle (root rotation) derives new keys too, so nothing verified under the old roots
  resumes. Without a secret, each context has random keys of its own (OpenSSL's default), which
  then last as long as the context (until the next SVID rotation).
* **one** ticket per handshake (:data:`SERVER_TICKETS`), not OpenSSL's default two
  (haproxy and BoringSSL/Envoy send two): OpenSSL 3.0 builds each stateless ticket by
  serialising the session and parsing it back, peer certificate included, ~0.15 ms of server
  CPU per ticket, and a client keeps one anyway (Envoy's upstream ``max_session_keys``
  defaults to 1, OpenSSL's and Python's clients resume with the last ticket received).
  Stateful tickets (``OP_NO_TICKET``) would be cheaper still but cost ~11 KiB of session
  cache per handshake (the cache holds up to 20,480 sessions per context).
* the certificate chain sent is exactly the SVID's (leaf, then its intermediates), as Envoy
  and haproxy send it: OpenSSL's per-handshake automatic chain building is switched off
  (:mod:`meshsec.proxy.tls_openssl`).

Python's ``ssl`` loads keys only from files: the key is handed over through an anonymous
``memfd`` (never on disk); where that is unavailable, a 0600 file in a 0700 temp directory that
is removed at once.

:class:`TlsContexts` holds an immutable :class:`TlsSnapshot`; :meth:`TlsContexts.update` builds
every context for the new SVID/bundle first and then swaps one reference, so a handshake always
sees one consistent set, new handshakes use the new material immediately, and connections
already open keep the SSL objects they were made with.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshsec.core.identity import SpiffeId, TrustDomainSet
from meshsec.core.pki import PkiError
from meshsec.core.pki.bundle import TrustBundle
from meshsec.core.pki.svid import X509Svid, spiffe_id_of
from meshsec.proxy.errors import PeerRejected, SecureNamingError, TlsMaterialError
from meshsec.proxy.tls_openssl import TICKET_KEYS_SIZE, disable_auto_chain, set_ticket_keys

log = logging.getLogger("meshsec.proxy.tls")

ISTIO_CIPHERS: tuple[str, ...] = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
)
ALPN_SERVER_TCP: tuple[str, ...] = ("istio-peer-exchange", "istio", "h2", "http/1.1")
ALPN_SERVER_HTTP: tuple[str, ...] = ("istio-peer-exchange", "istio", "http/1.1")
ALPN_CLIENT_ISTIO: tuple[str, ...] = ("istio-peer-exchange", "istio")

_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
SERVER_TICKETS = 1  # TLS 1.3 session tickets per full handshake (module docstring)
_SERVER_KINDS = (("tcp", ALPN_SERVER_TCP), ("http", ALPN_SERVER_HTTP))
"""The server contexts a snapshot holds: port kind (the ticket keys' purpose) and its ALPN."""
TICKET_KEY_PERIOD = 3600.0  # s: shared session-ticket keys change at every whole hour (UTC)


@dataclass(frozen=True)
class TlsParams:
    """Mesh-wide TLS knobs (MeshConfig ``meshMTLS``)."""

    min_version: str = "1.2"
    cipher_suites: tuple[str, ...] = ISTIO_CIPHERS

    def __post_init__(self) -> None:
        if self.min_version not in _TLS_VERSIONS:
            raise TlsMaterialError(
                "tls min version", f"{self.min_version!r} is not one of 1.2, 1.3"
            )


def _base_context(purpose: int, params: TlsParams) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = _TLS_VERSIONS[params.min_version]
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.set_ciphers(":".join(params.cipher_suites))
    except ssl.SSLError as exc:
        raise TlsMaterialError("cipher suites", f"OpenSSL accepts none of them ({exc})") from None
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


@contextlib.contextmanager
def _key_file(chain: bytes, key: bytes) -> Iterator[str]:
    """A path OpenSSL can read the key+chain from, alive only inside the ``with``."""
    data = key + chain
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("meshsec-svid", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="meshsec-svid-") as tmp:  # pragma: no cover
        path = Path(tmp) / "svid.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        try:
            yield str(path)
        finally:
            path.unlink(missing_ok=True)


def _load_svid(ctx: ssl.SSLContext, svid: X509Svid) -> None:
    try:
        with _key_file(svid.cert_chain_pem(), svid.private_key_pem()) as path:
            ctx.load_cert_chain(path)
    except (ssl.SSLError, OSError) as exc:
        raise TlsMaterialError(f"svid {svid.spiffe_id}", f"OpenSSL refused it ({exc})") from None
    disable_auto_chain(ctx)  # send the SVID's chain as given, not rebuilt per handshake


def _load_bundle(ctx: ssl.SSLContext, bundle: TrustBundle) -> None:
    if not len(bundle):
        raise TlsMaterialError("trust bundle", "holds no root certificate")
    try:
        ctx.load_verify_locations(cadata=bundle.to_pem().decode("ascii"))
    except ssl.SSLError as exc:
        raise TlsMaterialError("trust bundle", f"OpenSSL refused it ({exc})") from None


def build_server_context(
    svid: X509Svid,
    bundle: TrustBundle,
    *,
    alpn: Sequence[str] = ALPN_SERVER_TCP,
    params: TlsParams | None = None,
    ticket_keys: bytes | None = None,
) -> ssl.SSLContext:
    """Server context for mesh mTLS: our SVID, client cert required and checked by ``bundle``;
    ``ticket_keys``: session-ticket keys shared with other contexts (else random, its own)."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, params or TlsParams())
    _load_svid(ctx, svid)
    _load_bundle(ctx, bundle)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(list(alpn))
    ctx.num_tickets = SERVER_TICKETS
    if ticket_keys is not None and not set_ticket_keys(ctx, ticket_keys):
        log.warning("session-ticket keys could not be set: tickets resume on this worker only")
    return ctx


def derive_ticket_keys(secret: bytes, bundle: TrustBundle, purpose: str, epoch: int) -> bytes:
    """Session-ticket keys for the server contexts of one ``purpose`` (port kind) during one
    :func:`ticket_epoch`: the same in every process holding ``secret`` and the same trust
    bundle, different for another bundle or epoch."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=TICKET_KEYS_SIZE,
        salt=hashlib.sha256(bundle.to_pem()).digest(),
        info=b"meshsec session tickets %s %d" % (purpose.encode(), epoch),
    ).derive(secret)


def ticket_epoch(now: datetime) -> int:
    """Which :data:`TICKET_KEY_PERIOD` of the wall clock ``now`` falls in."""
    return int(now.timestamp() // TICKET_KEY_PERIOD)


def build_client_context(
    svid: X509Svid | None,
    bundle: TrustBundle | None,
    *,
    alpn: Sequence[str] = ALPN_CLIENT_ISTIO,
    params: TlsParams | None = None,
    check_hostname: bool = False,
) -> ssl.SSLContext:
    """Client context: present ``svid`` (if any), verify the server chain against ``bundle``.

    ``bundle=None`` means no server verification at all (DestinationRule SIMPLE/MUTUAL without
    ``caCertificates`` or with ``insecureSkipVerify``); callers log that choice.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, params or TlsParams())
    if svid is not None:
        _load_svid(ctx, svid)
    if bundle is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        _load_bundle(ctx, bundle)
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def build_file_client_context(
    *,
    certificate: Path | None,
    private_key: Path | None,
    ca_certificates: Path | None,
    check_hostname: bool,
    alpn: Sequence[str] = (),
    params: TlsParams | None = None,
) -> ssl.SSLContext:
    """Client context for DestinationRule SIMPLE/MUTUAL with file certificates."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, params or TlsParams())
    try:
        if certificate is not None:
            ctx.load_cert_chain(str(certificate), str(private_key) if private_key else None)
            disable_auto_chain(ctx)
        if ca_certificates is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cafile=str(ca_certificates))
            ctx.check_hostname = check_hostname
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as exc:
        where = certificate or ca_certificates
        raise TlsMaterialError(f"client tls files ({where})", str(exc)) from None
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The verified peer: its SPIFFE ID and the SHA-256 of its leaf certificate (DER, hex)."""

    spiffe_id: SpiffeId
    cert_sha256: str

    @property
    def principal(self) -> str:
        return str(self.spiffe_id)

    @property
    def namespace(self) -> str | None:
        return self.spiffe_id.namespace

    @property
    def service_account(self) -> str | None:
        return self.spiffe_id.service_account

    @property
    def trust_domain(self) -> str:
        return self.spiffe_id.trust_domain.name


@functools.lru_cache(maxsize=4096)
def parse_peer_identity(der: bytes) -> PeerIdentity:
    """SPIFFE leaf rules on a chain OpenSSL already verified: one URI SAN, not a CA.

    Cached by DER (a busy peer reconnects with the same leaf many times).
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PeerRejected(f"peer certificate is not parseable ({exc})") from None
    try:
        spiffe_id = spiffe_id_of(cert, require_path=True)
    except PkiError as exc:
        raise PeerRejected(f"peer certificate is not an X.509-SVID: {exc}") from None
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is not None and bc.ca:
        raise PeerRejected(
            f"peer certificate for {spiffe_id} is a CA certificate", presented=str(spiffe_id)
        )
    return PeerIdentity(spiffe_id, hashlib.sha256(der).hexdigest())


def peer_identity_of(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerIdentity:
    """The verified peer of a completed handshake (raises PeerRejected without a certificate)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PeerRejected("peer presented no certificate")
    return parse_peer_identity(der)


def verify_inbound_peer(peer: PeerIdentity, trust_domains: TrustDomainSet | None) -> None:
    """Server side (§5.1): the peer's trust domain must be the mesh's or an alias.

    ``trust_domains=None`` skips the check (Istio's ``PILOT_SKIP_VALIDATE_TRUST_DOMAIN``).
    """
    if trust_domains is None:
        return
    if peer.spiffe_id.trust_domain not in trust_domains:
        allowed = ", ".join(td.name for td in trust_domains.all)
        raise PeerRejected(
            f"peer {peer.spiffe_id} is outside the mesh trust domains [{allowed}]",
            presented=peer.principal,
        )


def verify_secure_naming(peer: PeerIdentity, allowed_sans: Sequence[str], destination: str) -> None:
    """Client side (§5.4): the server's SPIFFE ID must equal one of ``allowed_sans``.

    An empty list means the destination declares no identity: nothing to check (Envoy emits no
    ``match_subject_alt_names`` then).
    """
    if allowed_sans and peer.principal not in allowed_sans:
        raise SecureNamingError(destination, allowed_sans, peer.principal)


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class TlsSnapshot:
    """One consistent set of contexts for one SVID + bundle generation."""

    generation: int
    svid: X509Svid
    bundle: TrustBundle
    server_tcp: ssl.SSLContext
    server_http: ssl.SSLContext
    client_istio: ssl.SSLContext
    applied_at: datetime | None = None
    own_id: str = ""  # str(svid.spiffe_id), formatted once per rotation, not per connection

    def server_context(self, *, http: bool) -> ssl.SSLContext:
        return self.server_http if http else self.server_tcp


@dataclass
class TlsContexts:
    """The proxy's current TLS material; readers take ``current`` once per handshake."""

    params: TlsParams = field(default_factory=TlsParams)
    # shared by the --concurrency workers (module docstring); never printed
    ticket_secret: bytes | None = field(default=None, repr=False)
    _current: TlsSnapshot | None = None
    _generation: int = 0
    _ticket_epoch: int | None = None

    @property
    def current(self) -> TlsSnapshot:
        snapshot = self._current
        if snapshot is None:
            raise TlsMaterialError("workload certificate", "no SVID has been loaded yet")
        return snapshot

    @property
    def ready(self) -> bool:
        return self._current is not None

    def update(
        self, svid: X509Svid, bundle: TrustBundle, *, now: datetime | None = None
    ) -> TlsSnapshot:
        """Build every context for the new material, then swap (all or nothing)."""
        secret = self.ticket_secret
        epoch = ticket_epoch(now or datetime.now(UTC))
        server_tcp, server_http = (
            build_server_context(
                svid,
                bundle,
                alpn=alpn,
                params=self.params,
                ticket_keys=(
                    None if secret is None else derive_ticket_keys(secret, bundle, kind, epoch)
                ),
            )
            for kind, alpn in _SERVER_KINDS
        )
        client = build_client_context(svid, bundle, alpn=ALPN_CLIENT_ISTIO, params=self.params)
        self._generation += 1
        snapshot = TlsSnapshot(
            self._generation,
            svid,
            bundle,
            server_tcp,
            server_http,
            client,
            now,
            own_id=str(svid.spiffe_id),
        )
        self._current = snapshot
        self._ticket_epoch = epoch
        return snapshot

    def rotate_ticket_keys(self, now: datetime) -> bool:
        """Give the current server contexts the shared ticket keys of ``now``'s epoch; True
        when they changed (a new epoch). New tickets use them at once; a ticket issued under
        the old keys no longer resumes (that client does a full handshake)."""
        snapshot, secret = self._current, self.ticket_secret
        epoch = ticket_epoch(now)
        if snapshot is None or secret is None or epoch == self._ticket_epoch:
            return False
        for kind, _alpn in _SERVER_KINDS:
            keys = derive_ticket_keys(secret, snapshot.bundle, kind, epoch)
            if not set_ticket_keys(snapshot.server_context(http=kind == "http"), keys):
                # never keep the old keys: new contexts, with this epoch's keys where they
                # can be set and OpenSSL's own random ones where not
                log.warning("session-ticket keys could not be changed: rebuilding the contexts")
                self.update(snapshot.svid, snapshot.bundle, now=now)
                return True
        self._ticket_epoch = epoch
        return True

    def seconds_to_next_ticket_keys(self, now: datetime) -> float:
        """How long until the next epoch begins (when :meth:`rotate_ticket_keys` is due)."""
        return TICKET_KEY_PERIOD - now.timestamp() % TICKET_KEY_PERIOD
