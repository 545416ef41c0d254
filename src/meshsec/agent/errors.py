"""Errors of the node agent.

::

    MeshsecError
    └── AgentError
        ├── UpstreamError        the CA answered with an error, or could not be reached
        ├── CredentialError      the token file could not be used
        ├── SocketInUseError     a live server already listens on our socket path
        └── MountedCertsError    mounted certificate files are missing or inconsistent
"""

from __future__ import annotations

from pathlib import Path

from meshsec.errors import MeshsecError

# gRPC status names the agent retries (istio-contracts §1.6, Istio CARetryOptions).
RETRYABLE_CODES = frozenset(
    {"CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNAVAILABLE"}
)


class AgentError(MeshsecError):
    """Root of the agent's errors."""


class UpstreamError(AgentError):
    """A CreateCertificate call failed; ``code`` is the gRPC status name (``UNAVAILABLE``)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"ca request failed: {code}: {detail}")

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


class CredentialError(AgentError):
    """The token file is missing, empty, unreadable or holds an expired token."""

    def __init__(self, path: Path, reason: str, *, kind: str) -> None:
        self.path = path
        self.reason = reason
        self.kind = kind
        super().__init__(f"token file {path}: {reason}")


class SocketInUseError(AgentError):
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"socket {path}: {reason}")


class MountedCertsError(AgentError):
    def __init__(self, directory: Path, reason: str) -> None:
        self.directory = directory
        self.reason = reason
        super().__init__(f"mounted certificates in {directory}: {reason}")


class FileResourceError(AgentError):
    """A ``file-cert:`` / ``file-root:`` SDS resource that cannot be served (name or files)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class FileResourceNameError(FileResourceError):
    """A ``file-cert:`` / ``file-root:`` name that does not have the required form."""
