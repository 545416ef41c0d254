"""SDS resources served from files: ``file-cert:<cert>~<key>`` and ``file-root:<path>``.

Istio's names (contract §4.2) for DestinationRule / Gateway credentials that live in files:

* ``file-cert:<certPath>~<keyPath>`` → ``tls_certificate`` (the two files' bytes, as read). The
  name must split on ``~`` into exactly two non-empty paths; the key must match the first
  certificate (what Go's ``tls.LoadX509KeyPair`` checks). No SPIFFE rules: these are arbitrary
  (often public-CA) certificates.
* ``file-root:<caPath>`` → ``validation_context{trusted_ca}``; no ``~`` allowed. Certificates in
  the bundle that cannot be parsed are skipped (logged) when at least one is valid.
  ``file-root:system`` is the OS bundle (first existing of :data:`SYSTEM_CA_BUNDLES`).

File secrets are not cached across subscriptions and never rotated by the agent: a name is read
when a stream first subscribes it (retried with backoff from ``FILE_DEBOUNCE_DURATION`` for up to
``read_timeout``, like Istio), then watched while any stream subscribes it. The watch polls
``stat`` through symlinks (so a Kubernetes ``..data`` swap is a change) and, once a change has
settled for the debounce interval, re-reads; new content bumps the name's version and wakes the
streams, which push it only to their subscribers. A file that turns bad keeps the last good
secret in service (logged, ``istio_agent_num_file_secret_failures_total``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from meshsec.agent.errors import FileResourceError, FileResourceNameError
from meshsec.agent.metrics import FILE_SECRET_FAILURES, FILE_WATCHER_FAILURES, AgentMetrics
from meshsec.core.pki import (
    PkiError,
    encode_certificates_pem,
    parse_certificates_pem,
    parse_private_key_pem,
    public_keys_equal,
)
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)

FILE_CERT_PREFIX = "file-cert:"
FILE_ROOT_PREFIX = "file-root:"
SYSTEM_ROOT = "system"
# Istio's list: Debian/Ubuntu, Fedora/RHEL, OpenSUSE, OpenELEC, CentOS/RHEL 7, Alpine
SYSTEM_CA_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),
    Path("/etc/pki/tls/certs/ca-bundle.crt"),
    Path("/etc/ssl/ca-bundle.pem"),
    Path("/etc/pki/tls/cacert.pem"),
    Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"),
    Path("/etc/ssl/cert.pem"),
)
MAX_FILE_BYTES = 4 << 20  # a certificate bundle larger than this is not one
MAX_WATCHED_NAMES = 1024

_BEGIN_CERT = b"-----BEGIN CERTIFICATE-----"
_END_CERT = b"-----END CERTIFICATE-----"


@dataclass(frozen=True)
class FileResource:
    """A parsed file resource name: either ``cert`` + ``key`` or ``root``."""

    name: str
    cert: Path | None = None
    key: Path | None = None
    root: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert, self.key, self.root) if p is not None)


def is_file_resource_name(name: str) -> bool:
    return name.startswith((FILE_CERT_PREFIX, FILE_ROOT_PREFIX))


def parse_file_resource_name(name: str) -> FileResource:
    """``file-cert:<cert>~<key>`` / ``file-root:<path>`` → FileResource; FileResourceError
    saying what is wrong with the name otherwise."""
    if name.startswith(FILE_CERT_PREFIX):
        parts = name[len(FILE_CERT_PREFIX) :].split("~")
        if len(parts) != 2 or not all(parts):
            raise FileResourceNameError(name, "must be file-cert:<cert path>~<key path>")
        return FileResource(name, cert=Path(parts[0]), key=Path(parts[1]))
    if name.startswith(FILE_ROOT_PREFIX):
        path = name[len(FILE_ROOT_PREFIX) :]
        if not path or "~" in path:
            raise FileResourceNameError(name, "must be file-root:<CA bundle path> (no '~')")
        if path == SYSTEM_ROOT:
            return FileResource(name, root=find_system_ca_bundle(name))
        return FileResource(name, root=Path(path))
    raise FileResourceNameError(name, "not a file-cert: or file-root: resource name")


def find_system_ca_bundle(name: str = FILE_ROOT_PREFIX + SYSTEM_ROOT) -> Path:
    for candidate in SYSTEM_CA_BUNDLES:
        if candidate.is_file():
            return candidate
    raise FileResourceError(
        name, "no OS CA bundle found in " + ", ".join(map(str, SYSTEM_CA_BUNDLES))
    )


def load_file_secret(resource: FileResource) -> secret_pb2.Secret:
    """Read and check the files of ``resource``; FileResourceError with the reason."""
    if resource.root is not None:
        pem = _valid_root_pem(resource.name, _read(resource.name, resource.root))
        return secret_pb2.Secret(
            name=resource.name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=pem)
            ),
        )
    if resource.cert is None or resource.key is None:
        raise FileResourceError(resource.name, "neither a root nor a cert/key resource")
    cert_pem = _read(resource.name, resource.cert)
    key_pem = _read(resource.name, resource.key)
    try:
        chain = parse_certificates_pem(cert_pem, what=str(resource.cert))
        key = parse_private_key_pem(key_pem, what=str(resource.key))
    except PkiError as exc:
        raise FileResourceError(resource.name, str(exc)) from None
    if not public_keys_equal(chain[0].public_key(), key.public_key()):  # type: ignore[arg-type]
        raise FileResourceError(
            resource.name, f"{resource.key} does not match the certificate in {resource.cert}"
        )
    return secret_pb2.Secret(
        name=resource.name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=key_pem),
        ),
    )


def _read(name: str, path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise FileResourceError(name, f"{path} does not exist") from None
    except OSError as exc:
        raise FileResourceError(name, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise FileResourceError(name, f"{path} is larger than {MAX_FILE_BYTES} bytes")
    if not data.strip():
        raise FileResourceError(name, f"{path} is empty")
    return data


def _valid_root_pem(name: str, data: bytes) -> bytes:
    """The parsable CA certificates of a bundle (others skipped), re-encoded as PEM."""
    good: list[x509.Certificate] = []
    skipped = 0
    for block in _pem_cert_blocks(data):
        try:
            good.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            skipped += 1
    if not good:
        raise FileResourceError(name, "no valid CERTIFICATE in the CA bundle")
    if skipped:
        log.warning("%s: skipped %d certificate(s) that cannot be parsed", name, skipped)
    return encode_certificates_pem(good)


def _pem_cert_blocks(data: bytes) -> list[bytes]:
    blocks = []
    start = data.find(_BEGIN_CERT)
    while start >= 0:
        end = data.find(_END_CERT, start)
        if end < 0:
            blocks.append(data[start:])  # truncated: counted as unparsable
            break
        blocks.append(data[start : end + len(_END_CERT)] + b"\n")
        start = data.find(_BEGIN_CERT, end)
    return blocks


Signature = tuple[tuple[str, int, int, int], ...]


@dataclass
class _Watched:
    resource: FileResource
    secret: secret_pb2.Secret
    signature: Signature | None
    version: int = 1
    subscribers: int = 0


class FileSecrets:
    """File resources subscribed by SDS streams: loaded on demand, watched while subscribed."""

    def __init__(
        self,
        clock: Clock,
        metrics: AgentMetrics,
        *,
        poll_interval: float = 1.0,
        debounce: float = 0.1,
        read_timeout: float = 10.0,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self._poll_interval = poll_interval
        self._debounce = debounce
        self._read_timeout = read_timeout
        self._watched: dict[str, _Watched] = {}
        self._generation = 0
        self._event = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None  # runs only while something is watched

    async def subscribe(self, name: str) -> None:
        """Load ``name`` (retrying while ``read_timeout`` allows) and watch it; FileResourceError
        if it cannot be served. Each successful call needs one :meth:`unsubscribe`."""
        entry = self._watched.get(name)
        if entry is None:
            if len(self._watched) >= MAX_WATCHED_NAMES:
                raise FileResourceError(name, f"more than {MAX_WATCHED_NAMES} file resources")
            resource = parse_file_resource_name(name)
            signature, secret = await self._load_with_retry(resource)
            entry = self._watched.setdefault(name, _Watched(resource, secret, signature))
        entry.subscribers += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self.run(), name="file-resources")
            self._poller.add_done_callback(_log_crash)

    def unsubscribe(self, name: str) -> None:
        entry = self._watched.get(name)
        if entry is None:
            return
        entry.subscribers -= 1
        if entry.subscribers <= 0:
            del self._watched[name]
        if not self._watched and self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def close(self) -> None:
        self._watched.clear()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None

    def secret(self, name: str) -> secret_pb2.Secret | None:
        entry = self._watched.get(name)
        return None if entry is None else entry.secret

    def version(self, name: str) -> int:
        entry = self._watched.get(name)
        return 0 if entry is None else entry.version

    @property
    def generation(self) -> int:
        return self._generation

    async def wait_for_change(self, seen_generation: int) -> int:
        while self._generation <= seen_generation:
            await self._event.wait()
        return self._generation

    def check_once(self) -> list[str]:
        """Poll step: re-read names whose files changed; the names whose content changed."""
        changed = []
        for name, entry in list(self._watched.items()):
            try:
                signature = _signature(entry.resource)
            except OSError as exc:
                if entry.signature is not None:
                    self._metrics.inc(FILE_WATCHER_FAILURES)
                    log.error("%s: cannot watch: %s; keeping the last good secret", name, exc)
                entry.signature = None
                continue
            if signature == entry.signature:
                continue
            entry.signature = signature
            try:
                secret = load_file_secret(entry.resource)
            except FileResourceError as exc:
                self._metrics.inc(FILE_SECRET_FAILURES)
                log.error("rejected %s; keeping the last good secret", exc)
                continue
            if secret != entry.secret:
                entry.secret = secret
                entry.version += 1
                changed.append(name)
                log.info("file resource %s changed; pushing version %d", name, entry.version)
        if changed:
            self._generation += 1
            event, self._event = self._event, asyncio.Event()
            event.set()
        return changed

    def _changed(self) -> bool:
        for entry in self._watched.values():
            try:
                if _signature(entry.resource) != entry.signature:
                    return True
            except OSError:
                if entry.signature is not None:
                    return True
        return False

    async def run(self) -> None:
        """The poll loop (started by the first :meth:`subscribe`, stopped with the last)."""
        while True:
            await self._clock.sleep(self._poll_interval)
            if self._changed():
                await self._clock.sleep(self._debounce)  # let a multi-file update settle
                self.check_once()

    async def _load_with_retry(
        self, resource: FileResource
    ) -> tuple[Signature | None, secret_pb2.Secret]:
        delay = max(self._debounce, 0.001)
        waited = 0.0
        while True:
            try:
                signature: Signature | None = _signature(
                    resource
                )  # before the read: no lost update
            except OSError:
                signature = None  # load_file_secret says what is wrong; polled again later
            try:
                return signature, load_file_secret(resource)
            except FileResourceError:
                if waited + delay > self._read_timeout:
                    self._metrics.inc(FILE_SECRET_FAILURES)
                    raise
            await self._clock.sleep(delay)
            waited += delay
            delay *= 2


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.critical("file resource watcher crashed: %r", exc, exc_info=exc)


def _signature(resource: FileResource) -> Signature:
    """What identifies the files' current content without reading them (OSError if missing)."""
    parts = []
    for path in resource.paths:
        real = os.path.realpath(path)
        st = os.stat(real)
        parts.append((real, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(parts)
