"""Errors of the identity core."""

from __future__ import annotations

from meshsec.errors import MeshsecError


class IdentityError(MeshsecError):
    """Something about a SPIFFE identity is wrong."""


class InvalidTrustDomain(IdentityError):
    """A trust domain name violates the SPIFFE specification."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid trust domain {value[:300]!r}: {reason}")


class InvalidSpiffeId(IdentityError):
    """A SPIFFE ID violates the SPIFFE specification (or is not the shape asked for)."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid SPIFFE ID {value[:300]!r}: {reason}")
