"""Who is calling: istiod's authenticator chain, in Istio's order (first success wins).

1. :class:`ClientCertAuthenticator` — a client certificate presented in the TLS handshake
   (renewal with an existing mesh certificate). gRPC asks for the certificate without verifying
   it, so the chain is verified here against the CA's root bundle before any SAN is trusted.
2. :class:`KubeJwtAuthenticator` — a Kubernetes service-account token in ``authorization:
   Bearer``; the ``clusterid`` header selects which cluster's verifier checks it (empty → the
   local cluster). Verifiers: :class:`JwksTokenVerifier` (a cluster directory's JWKS, offline) and
   :class:`TokenReviewVerifier` (the Kubernetes TokenReview API, ``meshsec.ca.tokenreview``);
   remote clusters may also come and go at run time (a :class:`ClusterLookup`, e.g. the remote
   secrets of ``meshsec.ca.remote_clusters``), and ``clusterAliases`` map old ids to current ones.

Failures carry Istio's per-authenticator messages; the service logs them and answers the caller
only ``request authenticate failure``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import jwt

from meshsec.ca.errors import AuthenticationError
from meshsec.cluster import ClusterTrust
from meshsec.core.identity import IdentityError, SpiffeId, TrustDomain
from meshsec.core.pki import ChainVerificationError, InvalidPem, parse_certificates_pem
from meshsec.core.pki.bundle import TrustBundle
from meshsec.core.pki.verify import verify_svid

CLUSTER_ID_HEADER = "clusterid"
AUTHORIZATION_HEADER = "authorization"
BEARER_PREFIX = "Bearer "
SA_GROUP = "system:serviceaccounts"


class AuthFailure(Exception):
    """One authenticator's refusal (Istio's wording)."""


class UnknownClusterFailure(AuthFailure):
    """The ``clusterid`` header names a cluster this CA does not trust."""

    def __init__(self, message: str, cluster: str) -> None:
        super().__init__(message)
        self.cluster = cluster


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    pod_name: str | None = None
    pod_uid: str | None = None


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the identities a certificate may be issued for."""

    identities: tuple[SpiffeId, ...]
    authenticator: str
    cluster: str
    service_account: ServiceAccount | None = None


@dataclass(frozen=True)
class RequestInfo:
    """What the transport tells us about a call (built by the gRPC layer)."""

    headers: Mapping[str, tuple[str, ...]]
    peer: str
    peer_chain_pem: tuple[bytes, ...] = ()  # leaf first, as presented in the TLS handshake
    now: datetime = field(default_factory=lambda: datetime.now().astimezone())

    def header(self, name: str) -> tuple[str, ...]:
        return self.headers.get(name, ())


class Authenticator(Protocol):
    name: str

    async def authenticate(self, request: RequestInfo) -> Caller:
        """Return the caller or raise :class:`AuthFailure`."""
        ...


class TokenVerifier(Protocol):
    """Turns a service-account token into the service account it stands for (one cluster)."""

    async def verify_token(self, token: str, *, now: datetime) -> ServiceAccount:
        """Raise :class:`AuthFailure` when the token is not acceptable."""
        ...


class ClusterLookup(Protocol):
    """Remote clusters known at this moment (they may change between calls)."""

    def get(self, cluster_id: str) -> TokenVerifier | None: ...

    def cluster_ids(self) -> tuple[str, ...]: ...


async def authenticate_caller(
    authenticators: Sequence[Authenticator], request: RequestInfo
) -> Caller:
    """Run the chain in order; the first authenticator that succeeds wins."""
    reasons: list[str] = []
    unknown_cluster: str | None = None
    for authenticator in authenticators:
        try:
            caller = await authenticator.authenticate(request)
        except AuthFailure as exc:
            reasons.append(f"Authenticator {authenticator.name}: {exc}")
            if isinstance(exc, UnknownClusterFailure):
                unknown_cluster = exc.cluster
            continue
        if caller.identities:
            return caller
        reasons.append(f"Authenticator {authenticator.name}: no identity")
    raise AuthenticationError(reasons, unknown_cluster=unknown_cluster)


class ClientCertAuthenticator:
    """Identity from a verified client certificate chain (an X.509-SVID issued by this mesh)."""

    name = "ClientCertAuthenticator"

    def __init__(
        self,
        bundle: TrustBundle,
        intermediates: Sequence[Any],
        trust_domains: Sequence[TrustDomain],
    ) -> None:
        self._bundle = bundle
        self._intermediates = tuple(intermediates)
        self._trust_domains = tuple(trust_domains)

    async def authenticate(self, request: RequestInfo) -> Caller:
        if not request.peer_chain_pem:
            raise AuthFailure("no client certificate is presented")
        try:
            presented = [
                cert
                for pem in request.peer_chain_pem
                for cert in parse_certificates_pem(pem, what="client certificate")
            ]
        except InvalidPem as exc:
            raise AuthFailure(f"no verified chain is found: {exc}") from None
        leaf, *rest = presented
        chain = [leaf, *rest, *(c for c in self._intermediates if c not in rest)]
        try:
            identity = verify_svid(
                chain, self._bundle, now=request.now, trust_domains=self._trust_domains
            )
        except ChainVerificationError as exc:
            raise AuthFailure(f"no verified chain is found: {exc}") from None
        return Caller((identity,), self.name, "")


def parse_service_account_subject(sub: object) -> ServiceAccount:
    """``system:serviceaccount:<ns>:<sa>`` -> ServiceAccount (Istio's checks and wording)."""
    if not isinstance(sub, str):
        raise AuthFailure("the token is not a service account")
    parts = sub.split(":")
    if len(parts) != 4 or parts[0] != "system" or parts[1] != "serviceaccount":
        raise AuthFailure("the token is not a service account")
    if not parts[2]:
        raise AuthFailure("failed to parse the JWT; namespace required")
    if not parts[3]:
        raise AuthFailure("failed to parse the JWT; service account required")
    return ServiceAccount(parts[2], parts[3])


class JwksTokenVerifier:
    """Checks a token offline against one cluster directory's issuer and JWKS.

    Accepted only if: the JWS signature verifies with a key of the cluster (by ``kid``), ``iss``
    is the cluster's issuer, ``aud`` contains one of ``audiences``, ``exp`` / ``nbf`` / ``iat``
    hold within ``skew``, and ``sub`` is ``system:serviceaccount:<ns>:<sa>``. Verified tokens are
    cached (signature and claims are immutable); the time checks run on every use.
    """

    _CACHE_LIMIT = 4096

    def __init__(self, trust: ClusterTrust, *, audiences: Sequence[str], skew: timedelta) -> None:
        self.trust = trust
        self._audiences = frozenset(audiences)
        self._skew = skew.total_seconds()
        self._cache: dict[str, tuple[ServiceAccount, float, float]] = {}

    async def verify_token(self, token: str, *, now: datetime) -> ServiceAccount:
        return self.verify_token_sync(token, now=now)

    def verify_token_sync(self, token: str, *, now: datetime) -> ServiceAccount:
        ts = now.timestamp()
        cached = self._cache.get(token)
        if cached is None:
            cached = self._verify(token)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = cached
        account, not_before, expires = cached
        if ts > expires + self._skew:
            raise AuthFailure("failed to validate the JWT: token has expired")
        if ts + self._skew < not_before:
            raise AuthFailure("failed to validate the JWT: token is not valid yet")
        return account

    def _verify(self, token: str) -> tuple[ServiceAccount, float, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthFailure(f"failed to validate the JWT: malformed token: {exc}") from None
        kid = header.get("kid")
        key = self.trust.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise AuthFailure(
                f"failed to validate the JWT: token is not signed by a key of cluster "
                f"{self.trust.name!r} (kid {str(kid)[:64]!r})"
            )
        algorithm, public_key = key
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public_key,
                algorithms=[algorithm],
                options={
                    "verify_signature": True,
                    "verify_exp": False,  # checked against our clock on every use
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,  # checked below with Istio's any-of rule
                    "verify_iss": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise AuthFailure(f"failed to validate the JWT: {exc}") from None
        if claims.get("iss") != self.trust.issuer:
            raise AuthFailure(
                f"failed to validate the JWT: issuer {str(claims.get('iss'))[:200]!r} is not "
                f"the issuer of cluster {self.trust.name!r}"
            )
        aud = claims.get("aud")
        listed = aud if isinstance(aud, list) else [aud]
        token_auds = {a for a in listed if isinstance(a, str)}
        if not token_auds & self._audiences:
            raise AuthFailure(
                f"failed to validate the JWT: audiences {sorted(map(str, token_auds))} do not "
                f"include any of {sorted(self._audiences)}"
            )
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthFailure("failed to validate the JWT: token has no exp claim")
        expires = _numeric_date("exp", exp)
        nbf = claims.get("nbf", claims.get("iat", 0))
        not_before = _numeric_date("nbf", nbf) if isinstance(nbf, int | float) else 0.0
        account = parse_service_account_subject(claims.get("sub"))
        k8s = claims.get("kubernetes.io")
        if isinstance(k8s, dict) and isinstance(k8s.get("pod"), dict):
            pod = k8s["pod"]
            account = ServiceAccount(
                account.namespace, account.name, str(pod.get("name")), str(pod.get("uid"))
            )
        return account, not_before, expires


# RFC 7519 NumericDate, limited to what a datetime can hold: 0001..9999 is far beyond any real
# token, and refusing the rest keeps inf / nan / 10**400 from becoming "never expires" or a crash.
_MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z


def _numeric_date(claim: str, value: int | float) -> float:
    """A finite, in-range claim as float seconds; AuthFailure otherwise."""
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or not -_MAX_NUMERIC_DATE <= seconds <= _MAX_NUMERIC_DATE:
        raise AuthFailure(f"failed to validate the JWT: {claim} claim is out of range")
    return seconds


class KubeJwtAuthenticator:
    """Bearer token + ``clusterid`` header -> the cluster's verifier -> SPIFFE identity."""

    name = "KubeJWTAuthenticator"

    def __init__(
        self,
        verifiers: Mapping[str, TokenVerifier],
        local_cluster: str,
        trust_domain: TrustDomain,
        *,
        remote: ClusterLookup | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        if local_cluster not in verifiers and remote is None:
            raise ValueError(f"local cluster {local_cluster!r} has no verifier")
        self._verifiers = dict(verifiers)
        self._local = local_cluster
        self._trust_domain = trust_domain
        self._remote = remote
        self._aliases = dict(aliases or {})
        self._identities: dict[tuple[str, str], SpiffeId] = {}

    @property
    def clusters(self) -> tuple[str, ...]:
        dynamic = self._remote.cluster_ids() if self._remote is not None else ()
        return tuple(dict.fromkeys((*self._verifiers, *dynamic)))

    def _lookup(self, cluster: str) -> TokenVerifier | None:
        verifier = self._verifiers.get(cluster)
        if verifier is None and self._remote is not None:
            verifier = self._remote.get(cluster)
        return verifier

    def _select(self, request: RequestInfo) -> tuple[str, TokenVerifier]:
        """Istio's ``getKubeClient``: local for "", the local id or an alias of it; else the
        remote cluster of that id, then of its alias."""
        values = request.header(CLUSTER_ID_HEADER)
        cluster = values[0] if len(values) == 1 else ""
        alias = self._aliases.get(cluster)
        if cluster in ("", self._local) or alias == self._local:
            local = self._verifiers.get(self._local)
            if local is None:
                raise AuthFailure(
                    f"no token verifier is configured for local cluster {self._local!r}"
                )
            return self._local, local
        for candidate in (cluster, alias):
            verifier = self._lookup(candidate) if candidate else None
            if candidate and verifier is not None:
                return candidate, verifier
        remotes = sorted(c for c in self.clusters if c != self._local)
        # Istio's wording and Go formatting (%q for names, %v for the list), so log searches
        # written for istiod's message find ours
        raise UnknownClusterFailure(
            f"client claims to be in cluster {_go_quote(cluster[:100])}, but we only know about "
            f"local cluster {_go_quote(self._local)} and remote clusters [{' '.join(remotes)}]",
            cluster[:100],
        )

    async def authenticate(self, request: RequestInfo) -> Caller:
        values = request.header(AUTHORIZATION_HEADER)
        if not values:
            raise AuthFailure("no HTTP authorization header exists")
        value = values[0]
        if not value.startswith(BEARER_PREFIX) or not value[len(BEARER_PREFIX) :].strip():
            raise AuthFailure("no bearer token exists in HTTP authorization header")
        token = value[len(BEARER_PREFIX) :].strip()
        cluster, verifier = self._select(request)
        account = await verifier.verify_token(token, now=request.now)
        return Caller((self._identity(account),), self.name, cluster, account)

    _IDENTITY_CACHE_LIMIT = 4096

    def _identity(self, account: ServiceAccount) -> SpiffeId:
        """``spiffe://<td>/ns/<ns>/sa/<sa>``, validated once per service account (cached)."""
        key = (account.namespace, account.name)
        identity = self._identities.get(key)
        if identity is None:
            try:
                identity = SpiffeId.for_service_account(
                    self._trust_domain, account.namespace, account.name
                )
            except IdentityError as exc:
                raise AuthFailure(f"invalid service account identity: {exc}") from None
            if len(self._identities) >= self._IDENTITY_CACHE_LIMIT:
                self._identities.clear()
            self._identities[key] = identity
        return identity


def _go_quote(text: str) -> str:
    """Double-quoted and escaped like Go's ``%q``: control characters never reach a log raw."""
    return json.dumps(text, ensure_ascii=True)
