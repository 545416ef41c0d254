"""A scriptable Authorizer for proxy tests: deny by principal, namespace or path; records calls."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshsec.proxy.authz import Decision, HttpRequestInfo, PeerInfo


@dataclass
class FakeAuthorizer:
    """Denies when the peer's principal or namespace, or the request path, is listed; else allows.

    ``allow_only_principals`` (when set) denies every other principal, plaintext included.
    """

    deny_principals: set[str] = field(default_factory=set)
    deny_namespaces: set[str] = field(default_factory=set)
    deny_paths: set[str] = field(default_factory=set)
    allow_only_principals: set[str] | None = None
    calls: list[tuple[PeerInfo, int, HttpRequestInfo | None]] = field(default_factory=list)

    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        self.calls.append((peer, port, request))
        if (
            self.allow_only_principals is not None
            and peer.principal not in self.allow_only_principals
        ):
            return Decision(False, f"principal {peer.principal or '(none)'} not allowed")
        if peer.principal in self.deny_principals:
            return Decision(False, f"principal {peer.principal} denied")
        if peer.namespace in self.deny_namespaces:
            return Decision(False, f"namespace {peer.namespace} denied")
        if request is not None and request.path in self.deny_paths:
            return Decision(False, f"path {request.path} denied")
        return Decision(True, "allowed by fake")
