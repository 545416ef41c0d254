"""Errors of the CA service.

::

    MeshsecError
    └── CaError
        ├── AuthenticationError     no authenticator accepted the caller (one reason each)
        ├── ImpersonationError      ImpersonatedIdentity asked for, no node authorizer configured
        ├── TtlError                requested TTL above the maximum
        ├── CaNotReady              CA material is not loaded (or expired)
        ├── RequestRejected         request too large / malformed metadata
        ├── Overloaded              in-flight limit reached
        └── LedgerError             the issuance ledger cannot be opened or read

CSR problems are the core's ``InvalidCsr`` / ``KeyPolicyError`` / ``InvalidPem``; problems with CA
material are the core's ``CaMaterialError`` (naming the file and the problem).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from meshsec.errors import MeshsecError


class CaError(MeshsecError):
    """Root of the CA service's errors."""


class AuthenticationError(CaError):
    """Every authenticator refused the caller; ``reasons`` holds one line per authenticator.

    ``unknown_cluster`` is the cluster id the caller claimed when no trusted cluster has it (the
    one detail the caller is told: it is their own input and reveals nothing of ours).
    """

    def __init__(self, reasons: Sequence[str], *, unknown_cluster: str | None = None) -> None:
        self.reasons = tuple(reasons)
        self.unknown_cluster = unknown_cluster
        super().__init__("; ".join(self.reasons) or "no authenticator is configured")


class ImpersonationError(CaError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TtlError(CaError):
    """``requested`` is a timedelta, or the raw seconds when they do not fit in one."""

    def __init__(self, requested: timedelta | int, maximum: timedelta) -> None:
        self.requested = requested
        self.maximum = maximum
        shown = f"{requested}s" if isinstance(requested, int) else str(requested)
        super().__init__(f"requested TTL {shown} is greater than the max allowed TTL {maximum}")


class CaNotReady(CaError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"CA is not ready: {reason}")


class RequestRejected(CaError):
    """The request itself is unusable (too large, bad metadata) before any authentication."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Overloaded(CaError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"{limit} requests are already in flight")


class LedgerError(CaError):
    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"issuance ledger {path}: {reason}")
