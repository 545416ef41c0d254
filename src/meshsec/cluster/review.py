"""TokenReview as kube-apiserver answers it, for tokens a local cluster issued (pure).

:func:`review_token` checks a service-account token the way the API server's service-account
authenticator does: the JWS signature with one of the cluster's keys (by ``kid``), ``iss`` is the
cluster's issuer, ``exp`` / ``nbf`` within a minute of leeway, ``sub`` is
``system:serviceaccount:<ns>:<sa>``, and the token's ``aud`` intersects the audiences asked for
(``spec.audiences``, or the API server's own audiences when the spec names none). The result is
the user Kubernetes reports: username, uid, groups (``system:serviceaccounts``,
``system:serviceaccounts:<ns>``, ``system:authenticated``) and, for pod-bound tokens, the
``authentication.kubernetes.io/pod-name`` / ``pod-uid`` extras; ``status.audiences`` is the
intersection.

:func:`parse_api_policy` reads what the API server enforces from ``cluster.yaml``: its audiences
and the RBAC-like allow list of service accounts that may create TokenReviews.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt

from meshsec.cluster.directory import TOKENREVIEW_GROUP, TOKENREVIEW_RESOURCE, ClusterTrust
from meshsec.cluster.errors import ClusterDirError

LEEWAY_SECONDS = 60.0
SA_GROUP = "system:serviceaccounts"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
CREDENTIAL_ID_EXTRA = "authentication.kubernetes.io/credential-id"


class TokenInvalid(Exception):
    """The token does not authenticate; the message is what ``status.error`` says."""


@dataclass(frozen=True)
class ApiPolicy:
    api_audiences: tuple[str, ...]
    token_reviewers: frozenset[str] = field(default_factory=frozenset)  # "<ns>/<sa>"

    def may_create_tokenreviews(self, user: ReviewedUser) -> bool:
        return user.service_account in self.token_reviewers


@dataclass(frozen=True)
class ReviewedUser:
    username: str
    uid: str
    groups: tuple[str, ...]
    extra: Mapping[str, tuple[str, ...]]
    audiences: tuple[str, ...]

    @property
    def service_account(self) -> str:
        _, _, namespace, name = self.username.split(":")
        return f"{namespace}/{name}"

    def to_json(self) -> dict[str, Any]:
        user: dict[str, Any] = {
            "username": self.username,
            "uid": self.uid,
            "groups": list(self.groups),
        }
        if self.extra:
            user["extra"] = {k: list(v) for k, v in self.extra.items()}
        return user


def parse_api_policy(meta: Mapping[str, Any], issuer: str, path: Path) -> ApiPolicy:
    """The ``apiAudiences`` and ``rbac`` fields of ``cluster.yaml`` (missing: issuer / nobody)."""
    audiences = meta.get("apiAudiences", [issuer])
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise ClusterDirError(path, "'apiAudiences' must be a list of non-empty strings")
    reviewers: set[str] = set()
    rules = meta.get("rbac", [])
    if not isinstance(rules, list):
        raise ClusterDirError(path, "'rbac' must be a list of rules")
    for index, rule in enumerate(rules):
        where = f"rbac[{index}]"
        if not isinstance(rule, dict):
            raise ClusterDirError(path, f"{where} is not a mapping")
        accounts = rule.get("serviceAccounts", [])
        verbs = rule.get("verbs", [])
        if not isinstance(accounts, list) or not isinstance(verbs, list):
            raise ClusterDirError(path, f"{where}: 'serviceAccounts' and 'verbs' must be lists")
        for account in accounts:
            if not isinstance(account, str) or account.count("/") != 1 or "" in account.split("/"):
                raise ClusterDirError(path, f"{where}: service account {account!r} is not ns/name")
        if (
            rule.get("apiGroup") == TOKENREVIEW_GROUP
            and rule.get("resource") == TOKENREVIEW_RESOURCE
            and ("create" in verbs or "*" in verbs)
        ):
            reviewers.update(accounts)
    return ApiPolicy(tuple(audiences), frozenset(reviewers))


def _format_list(values: Sequence[str]) -> str:
    return "[" + ",".join(f'"{v[:100]}"' for v in values) + "]"


def review_token(
    trust: ClusterTrust, token: str, *, audiences: Sequence[str], now: datetime
) -> ReviewedUser:
    """The authenticated user behind ``token``, or :class:`TokenInvalid`."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenInvalid("invalid bearer token, token is not a compact JWS") from None
    kid = header.get("kid")
    key = trust.keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenInvalid("invalid bearer token, no key of this cluster signed the token")
    algorithm, public_key = key
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=[algorithm],
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidTokenError:
        raise TokenInvalid("invalid bearer token, the token signature is invalid") from None
    if claims.get("iss") != trust.issuer:
        raise TokenInvalid("invalid bearer token, the token was issued by another issuer")
    ts = now.timestamp()
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int | float) or ts > exp + LEEWAY_SECONDS:
        raise TokenInvalid("invalid bearer token, service account token has expired")
    if isinstance(nbf, int | float) and ts + LEEWAY_SECONDS < nbf:
        raise TokenInvalid("invalid bearer token, service account token is not valid yet")
    aud = claims.get("aud")
    token_auds = [a for a in (aud if isinstance(aud, list) else [aud]) if isinstance(a, str)]
    wanted = list(audiences)
    common = tuple(a for a in wanted if a in token_auds)
    if not common:
        raise TokenInvalid(
            f"invalid bearer token, token audiences {_format_list(token_auds)} is invalid for "
            f"the target audiences {_format_list(wanted)}"
        )
    sub = claims.get("sub")
    parts = sub.split(":") if isinstance(sub, str) else []
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"] or not all(parts[2:]):
        raise TokenInvalid("invalid bearer token, the subject is not a service account")
    namespace, name = parts[2], parts[3]
    k8s = claims.get("kubernetes.io")
    k8s = k8s if isinstance(k8s, dict) else {}
    sa = k8s.get("serviceaccount")
    uid = str(sa.get("uid", "")) if isinstance(sa, dict) else ""
    extra: dict[str, tuple[str, ...]] = {}
    pod = k8s.get("pod")
    if isinstance(pod, dict) and isinstance(pod.get("name"), str):
        extra[POD_NAME_EXTRA] = (pod["name"],)
        extra[POD_UID_EXTRA] = (str(pod.get("uid", "")),)
    if isinstance(claims.get("jti"), str):
        extra[CREDENTIAL_ID_EXTRA] = (f"JTI={claims['jti']}",)
    return ReviewedUser(
        username=f"system:serviceaccount:{namespace}:{name}",
        uid=uid,
        groups=(SA_GROUP, f"{SA_GROUP}:{namespace}", "system:authenticated"),
        extra=extra,
        audiences=common,
    )
