"""Minting tokens shaped like projected Kubernetes service-account tokens.

A projected token (``serviceAccountToken`` volume, audience ``istio-ca``) carries::

    iss  the cluster's issuer URL          sub  system:serviceaccount:<ns>:<sa>
    aud  [audience, ...]                   exp / iat / nbf  (seconds)
    jti  unique id
    kubernetes.io: {namespace, serviceaccount: {name, uid}, pod: {name, uid}?}

signed with the cluster's key (RS256 or ES256) and the key id in the JWS header.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from meshsec.cluster.directory import ClusterSigner
from meshsec.cluster.errors import ClusterError

DEFAULT_AUDIENCE = "istio-ca"
DEFAULT_TOKEN_TTL = timedelta(hours=1)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class TokenRequest:
    namespace: str
    service_account: str
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    ttl: timedelta = DEFAULT_TOKEN_TTL
    pod_name: str | None = None


def _check_k8s_name(kind: str, value: str) -> None:
    # Kubernetes namespaces and service accounts are DNS-1123 names.
    if not value or len(value) > 253 or not set(value) <= _NAME_CHARS or value[0] in "-.":
        raise ClusterError(
            f"invalid {kind} {value!r}: must be a lower-case DNS-1123 name "
            "(letters, digits, '-', '.')"
        )


def build_token_claims(
    signer: ClusterSigner, req: TokenRequest, *, now: datetime
) -> dict[str, Any]:
    """The claim set of a projected service-account token (pure apart from the ids it derives)."""
    _check_k8s_name("namespace", req.namespace)
    _check_k8s_name("service account", req.service_account)
    if not req.audiences or any(not a for a in req.audiences):
        raise ClusterError("at least one non-empty audience is required")
    if req.ttl <= timedelta(0):
        raise ClusterError(f"token TTL must be positive, got {req.ttl}")
    issued = int(now.timestamp())
    # Stable per (cluster, namespace, name): a service account keeps its uid across tokens.
    sa_uid = uuid.uuid5(
        uuid.NAMESPACE_URL, f"{signer.trust.issuer}/{req.namespace}/{req.service_account}"
    )
    k8s: dict[str, Any] = {
        "namespace": req.namespace,
        "serviceaccount": {"name": req.service_account, "uid": str(sa_uid)},
    }
    if req.pod_name:
        _check_k8s_name("pod name", req.pod_name)
        pod_uid = uuid.uuid5(sa_uid, req.pod_name)
        k8s["pod"] = {"name": req.pod_name, "uid": str(pod_uid)}
    return {
        "aud": list(req.audiences),
        "exp": issued + int(req.ttl.total_seconds()),
        "iat": issued,
        "iss": signer.trust.issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": k8s,
        "nbf": issued,
        "sub": f"system:serviceaccount:{req.namespace}:{req.service_account}",
    }


def mint_token(signer: ClusterSigner, req: TokenRequest, *, now: datetime) -> str:
    """A signed compact JWS for ``req``."""
    claims = build_token_claims(signer, req, now=now)
    return jwt.encode(
        claims,
        signer.private_key,
        algorithm=signer.algorithm,
        headers={"kid": signer.kid, "typ": "JWT"},
    )
