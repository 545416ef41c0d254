"""gRPC ``istio.v1.auth.IstioCertificateService/CreateCertificate`` (grpc.aio).

Flow (Istio's ``CreateCertificate``): count the CSR → in-flight limit → authenticate (chain of
authenticators, first success wins) → refuse ImpersonatedIdentity (no node authorizer) → parse
and check the CSR → resolve the TTL → sign for the *caller's* identity (the CSR's SANs are
ignored) → record in the ledger and wait for its commit → reply ``[leaf, intermediates...,
root bundle]`` (a failed ledger write answers INTERNAL; the certificate is not handed out).

Errors are mapped to status codes by the explicit :data:`ERROR_TO_STATUS` table only. The caller
gets Istio's short message; the full reason goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from meshsec._proto import istio_ca_pb2
from meshsec.ca.authn import Authenticator, RequestInfo, authenticate_caller
from meshsec.ca.authority import CertificateAuthority
from meshsec.ca.errors import (
    AuthenticationError,
    CaNotReady,
    ImpersonationError,
    LedgerError,
    Overloaded,
    RequestRejected,
    TtlError,
)
from meshsec.ca.ledger import IssuedRecord
from meshsec.ca.metrics import CaCounters
from meshsec.core.pki import InvalidCsr, InvalidPem, IssuanceError, KeyPolicyError, parse_csr
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)

METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
MAX_METADATA_FIELDS = 32


@dataclass(frozen=True)
class StatusMapping:
    code: grpc.StatusCode
    message: str  # what the caller sees; "{detail}" is replaced only where the detail is theirs
    sign_error: str | None = None  # citadel_server_csr_sign_err_count{error=...}
    auth_failure: bool = False


ERROR_TO_STATUS: dict[type[Exception], StatusMapping] = {
    AuthenticationError: StatusMapping(
        grpc.StatusCode.UNAUTHENTICATED, "request authenticate failure", auth_failure=True
    ),
    ImpersonationError: StatusMapping(
        grpc.StatusCode.UNAUTHENTICATED, "request impersonation authentication failure"
    ),
    InvalidCsr: StatusMapping(
        grpc.StatusCode.INVALID_ARGUMENT, "CSR signing error ({detail})", "CSR_ERROR"
    ),
    InvalidPem: StatusMapping(
        grpc.StatusCode.INVALID_ARGUMENT, "CSR signing error ({detail})", "CSR_ERROR"
    ),
    KeyPolicyError: StatusMapping(
        grpc.StatusCode.INVALID_ARGUMENT, "CSR signing error ({detail})", "CSR_ERROR"
    ),
    TtlError: StatusMapping(
        grpc.StatusCode.INVALID_ARGUMENT, "CSR signing error ({detail})", "TTL_ERROR"
    ),
    CaNotReady: StatusMapping(
        grpc.StatusCode.INTERNAL, "CSR signing error (CA_NOT_READY)", "CA_NOT_READY"
    ),
    IssuanceError: StatusMapping(
        grpc.StatusCode.INTERNAL, "CSR signing error (CERT_GEN_ERROR)", "CERT_GEN_ERROR"
    ),
    LedgerError: StatusMapping(  # the row is not durable, so the certificate is not handed out
        grpc.StatusCode.INTERNAL, "CSR signing error (CERT_GEN_ERROR)", "CERT_GEN_ERROR"
    ),
    RequestRejected: StatusMapping(grpc.StatusCode.INVALID_ARGUMENT, "invalid request ({detail})"),
    Overloaded: StatusMapping(grpc.StatusCode.RESOURCE_EXHAUSTED, "CA is overloaded, retry later"),
}
"""Every error the CA expects, and what the caller is told for it.

Anything else raised while handling a request is a bug; :data:`UNEXPECTED` is its last-resort
answer. ``CreateCertificate`` is the boundary between the CA and its callers, so it is the one
place with a broad ``except Exception``: the caller gets INTERNAL ``CSR signing error
(UNKNOWN)`` (never Python's text), ``citadel_server_csr_sign_err_count{error="UNKNOWN"}`` counts
it, and the log gets the traceback.
"""
_MAPPED: tuple[type[Exception], ...] = tuple(ERROR_TO_STATUS)
UNEXPECTED = StatusMapping(grpc.StatusCode.INTERNAL, "CSR signing error (UNKNOWN)", "UNKNOWN")


def lookup_status(exc: Exception) -> StatusMapping:
    """The table entry for ``exc`` (most specific class first); KeyError if it has none."""
    for cls in type(exc).__mro__:
        if cls in ERROR_TO_STATUS:
            return ERROR_TO_STATUS[cls]
    raise KeyError(type(exc).__name__)


def caller_message(exc: Exception, mapping: StatusMapping) -> str:
    """What the caller is told: Istio's string, plus details that are the caller's own input."""
    message = mapping.message.format(detail=str(exc)[:300])
    if isinstance(exc, AuthenticationError) and exc.unknown_cluster is not None:
        message += f" (unknown cluster {exc.unknown_cluster!r})"
    return message


class IssuanceRecorder(Protocol):
    async def commit(self, record: IssuedRecord) -> None:
        """Return once the row is committed (raise LedgerError if it is not)."""
        ...


SERVICE_NAME = "istio.v1.auth.IstioCertificateService"


def encode_chain_element(pem: bytes) -> bytes:
    """One ``repeated string cert_chain = 1`` entry in protobuf wire format (tag, length, UTF-8).

    The response has no other field, so a response is its elements' encodings concatenated:
    the CA's own elements (intermediates, root bundle) are encoded once, per call only the leaf.
    """
    size = len(pem)
    length = bytearray()
    while size >= 0x80:
        length.append((size & 0x7F) | 0x80)
        size >>= 7
    length.append(size)
    return b"\x0a" + bytes(length) + pem


class CertificateService:
    """The handler; :func:`add_to_server` registers it with a grpc.aio server.

    Requests are decoded by protobuf (``IstioCertificateRequest``); replies are built as bytes
    (:func:`encode_chain_element`), the same wire format the generated serializer writes.
    """

    def __init__(
        self,
        authority: CertificateAuthority,
        authenticators: Sequence[Authenticator],
        *,
        ledger: IssuanceRecorder,
        counters: CaCounters,
        clock: Clock,
        max_in_flight: int = 128,
        max_request_bytes: int = 64 * 1024,
    ) -> None:
        self._authority = authority
        self._authenticators = tuple(authenticators)
        self._ledger = ledger
        self._counters = counters
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._max_request_bytes = max_request_bytes
        self._in_flight = 0
        self._encoded_tail = b"".join(encode_chain_element(e.encode()) for e in authority.tail)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def CreateCertificate(
        self, request: istio_ca_pb2.IstioCertificateRequest, context: Any
    ) -> bytes:
        """An encoded ``IstioCertificateResponse``, or the call aborted with a mapped status."""
        self._counters.inc("citadel_server_csr_count")
        peer = context.peer()
        try:
            if self._in_flight >= self._max_in_flight:
                raise Overloaded(self._max_in_flight)
            self._in_flight += 1
            try:
                leaf_pem = await self._create(request, context, peer)
            finally:
                self._in_flight -= 1
        except _MAPPED as exc:
            mapping = lookup_status(exc)
            self._report(exc, mapping, peer)
            await context.abort(mapping.code, caller_message(exc, mapping))
            raise AssertionError("unreachable: abort raises") from None
        except Exception:  # the boundary (see ERROR_TO_STATUS): a bug must not reach the caller
            self._counters.sign_error("UNKNOWN")
            log.exception("CSR signing error from %s (UNKNOWN): unexpected failure", peer)
            await context.abort(UNEXPECTED.code, UNEXPECTED.message)
            raise AssertionError("unreachable: abort raises") from None
        return encode_chain_element(leaf_pem) + self._encoded_tail

    def _report(self, exc: Exception, mapping: StatusMapping, peer: str) -> None:
        if mapping.auth_failure:
            self._counters.inc("citadel_server_authentication_failure_count")
            log.warning("Failed to authenticate client from %s: %s", peer, exc)
        elif mapping.sign_error is not None:
            self._counters.sign_error(mapping.sign_error)
            log.warning("CSR signing error from %s (%s): %s", peer, mapping.sign_error, exc)
        else:
            log.warning("request from %s refused (%s): %s", peer, mapping.code.name, exc)

    async def _create(
        self, request: istio_ca_pb2.IstioCertificateRequest, context: Any, peer: str
    ) -> bytes:
        size = request.ByteSize()
        if size > self._max_request_bytes:
            raise RequestRejected(
                f"request of {size} bytes exceeds the limit of {self._max_request_bytes} bytes "
                "(MESHSEC_CA_MAX_REQUEST_BYTES)"
            )
        now = self._clock.now()
        info = RequestInfo(
            headers=_headers(context.invocation_metadata()),
            peer=peer,
            peer_chain_pem=_peer_chain(context),
            now=now,
        )
        caller = await authenticate_caller(self._authenticators, info)
        metadata = request.metadata.fields if request.HasField("metadata") else {}
        if len(metadata) > MAX_METADATA_FIELDS:
            raise RequestRejected(f"metadata has {len(metadata)} fields (at most 32)")
        impersonated = metadata.get(IMPERSONATED_IDENTITY)
        if impersonated is not None and impersonated.string_value:
            raise ImpersonationError(
                f"{caller.identities[0]} asked to impersonate "
                f"{impersonated.string_value[:200]!r} but no node authorizer is configured"
            )
        csr = parse_csr(request.csr)
        identity = caller.identities[0]
        if csr.requested_uris and csr.requested_uris != (str(identity),):
            log.info(
                "CSR from %s asks for %s; ignored, issuing for the authenticated %s",
                peer,
                _shown_uris(csr.requested_uris),
                identity,
            )
        issued = self._authority.sign(
            csr, identity, requested_seconds=request.validity_duration, now=now
        )
        await self._ledger.commit(  # sign → record → reply: durable before it leaves
            IssuedRecord(
                serial=issued.serial_hex,
                spiffe_id=str(identity),
                not_before=issued.certificate.not_valid_before_utc,
                not_after=issued.certificate.not_valid_after_utc,
                authenticator=caller.authenticator,
                cluster=caller.cluster,
                issued_at=now,
            )
        )
        self._counters.inc("citadel_server_success_cert_issuance_count")
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "issued serial=%s id=%s authn=%s cluster=%s peer=%s",
                issued.serial_hex,
                identity,
                caller.authenticator,
                caller.cluster or "-",
                peer,
            )
        return issued.leaf_pem


def add_to_server(service: CertificateService, server: grpc.aio.Server) -> None:
    """Serve ``CreateCertificate``: protobuf decodes requests, the service writes reply bytes.

    Registered with grpc's core (``add_registered_method_handlers``, as generated code does), so
    a call is matched to its handler in C rather than by a Python lookup per call; the generic
    handler is the fallback generated code installs too."""
    handlers = {
        "CreateCertificate": grpc.unary_unary_rpc_method_handler(
            service.CreateCertificate,
            request_deserializer=istio_ca_pb2.IstioCertificateRequest.FromString,
            response_serializer=None,  # CreateCertificate returns the encoded response
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]  # not in the stubs


LOGGED_URIS = 5  # a CSR may carry hundreds of SANs; the log line names the first few


def _shown_uris(uris: Sequence[str]) -> str:
    shown = ", ".join(u[:200] for u in uris[:LOGGED_URIS])
    more = len(uris) - LOGGED_URIS
    return f"{shown} and {more} more" if more > 0 else shown


def _headers(metadata: Any) -> dict[str, tuple[str, ...]]:
    headers: dict[str, list[str]] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            headers.setdefault(key.lower(), []).append(value)
    return {k: tuple(v) for k, v in headers.items()}


def _peer_chain(context: Any) -> tuple[bytes, ...]:
    """The client's chain, leaf first.

    On the server, grpc's ``x509_pem_cert`` is the peer's leaf and ``x509_pem_cert_chain`` the
    rest of what it presented *without* the leaf (pinned by test_client_cert_renewal), so the
    leaf comes from the former and the chain entries that differ from it follow.
    """
    auth = context.auth_context() or {}
    leaves = auth.get("x509_pem_cert") or ()
    if not leaves:
        return ()
    leaf = leaves[0]
    rest = (pem for pem in auth.get("x509_pem_cert_chain") or () if pem.strip() != leaf.strip())
    return (leaf, *rest)
