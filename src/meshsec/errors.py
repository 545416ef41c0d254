"""The one error root of meshsec.

Each domain defines its own errors module whose classes derive from :class:`MeshsecError`::

    MeshsecError
    ├── IdentityError            core/identity/errors.py  (InvalidSpiffeId, InvalidTrustDomain)
    ├── PkiError                 core/pki/errors.py       (InvalidCsr, KeyPolicyError, ...)
    ├── PolicyError              core/policy/errors.py
    ├── ConfigError              config/errors.py         (bad settings; refuses to start)
    ├── AuthenticationError      ca/errors.py
    └── UpstreamError            agent/errors.py          (the CA answered with an error)

Errors are mapped to gRPC status codes and CLI exit codes only at the boundaries, by explicit
tables that tests cover. Messages are lower-case, without a trailing period, and never contain a
private key or a token.
"""

from __future__ import annotations


class MeshsecError(Exception):
    """Root of every error meshsec raises on purpose."""
