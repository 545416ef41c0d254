"""Errors of the PKI core.

Every failure the PKI core raises on purpose derives from :class:`PkiError`. Messages are
lower-case, name what was wrong (and the file or certificate where known) and never contain key
material.
"""

from __future__ import annotations

import enum

from meshsec.errors import MeshsecError


class PkiError(MeshsecError):
    """Something about keys, CSRs or certificates is wrong."""


class InvalidPem(PkiError):
    """PEM (or DER) input could not be parsed into what was expected."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"invalid {what}: {reason}")


class InvalidCsr(PkiError):
    """A certificate signing request is malformed, too large or not self-signed correctly."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid CSR: {reason}")


class KeyPolicyError(PkiError):
    """A key's type or size is not allowed (RSA < 2048 bits, unsupported curve, ...)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"key not allowed: {reason}")


class IssuanceError(PkiError):
    """A certificate cannot be issued (issuer expired, issuer not a CA, bad parameters)."""


class ChainFailure(enum.Enum):
    """Why a chain failed to verify; stable values for tests, metrics and gRPC mapping."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    UNKNOWN_AUTHORITY = "unknown-authority"
    BAD_SIGNATURE = "bad-signature"
    ISSUER_NOT_CA = "issuer-not-ca"
    PATHLEN_EXCEEDED = "pathlen-exceeded"
    LEAF_IS_CA = "leaf-is-ca"
    BAD_KEY_USAGE = "bad-key-usage"
    BAD_SAN = "bad-san"
    WRONG_TRUST_DOMAIN = "wrong-trust-domain"
    UNSUPPORTED = "unsupported"


class ChainVerificationError(PkiError):
    """A certificate chain did not verify; ``kind`` says which rule failed, ``reason`` details."""

    def __init__(self, reason: str, kind: ChainFailure = ChainFailure.UNSUPPORTED) -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(f"certificate verification failed ({kind.value}): {reason}")


class CaMaterialError(PkiError):
    """CA material (e.g. a ``cacerts`` file) is missing, malformed or inconsistent."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
