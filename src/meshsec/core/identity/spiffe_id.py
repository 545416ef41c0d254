"""SPIFFE IDs and trust domains, validated per the SPIFFE ID specification.

* Trust domain: lower-case ``[a-z0-9._-]``, non-empty, at most 255 bytes, no port, userinfo or
  percent-encoding.
* Path: segments of ``[a-zA-Z0-9._-]``; no empty, ``.`` or ``..`` segments; no trailing slash.
* Whole ID: scheme exactly ``spiffe`` (lower-case: ``SPIFFE://`` is refused, as go-spiffe and
  Envoy compare URI SANs byte for byte), at most 2048 bytes, no query or fragment.

Istio workload identities are ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from meshsec.core.identity.errors import InvalidSpiffeId, InvalidTrustDomain

SCHEME = "spiffe"
_PREFIX = "spiffe://"
MAX_TRUST_DOMAIN_BYTES = 255
MAX_ID_BYTES = 2048

_TD_CHARS = re.compile(r"[a-z0-9._-]+")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True, order=True)
class TrustDomain:
    """A validated SPIFFE trust domain name, such as ``cluster.local``."""

    name: str

    def __post_init__(self) -> None:
        _check_trust_domain(self.name)

    @classmethod
    def parse(cls, value: str) -> TrustDomain:
        """Accept a bare name (``cluster.local``) or an ID with no path (``spiffe://cluster.local``).

        ``SPIFFE://...`` goes to :meth:`SpiffeId.parse` too, whose error says the scheme must be
        lower-case (a bare-name error would only complain about the ``:``). Always raises
        :class:`InvalidTrustDomain`.
        """
        if value[: len(_PREFIX)].lower() == _PREFIX:
            try:
                spiffe_id = SpiffeId.parse(value)
            except InvalidSpiffeId as exc:
                raise InvalidTrustDomain(value, exc.reason) from None
            if spiffe_id.path:
                raise InvalidTrustDomain(value, "a trust domain ID must not have a path")
            return spiffe_id.trust_domain
        return cls(value)

    @property
    def id(self) -> SpiffeId:
        """The trust domain's own ID, ``spiffe://<name>`` (used as a bundle map key)."""
        return SpiffeId(self, "")

    def __str__(self) -> str:
        return self.name


def _check_trust_domain(name: str) -> None:
    if not name:
        raise InvalidTrustDomain(name, "trust domain is empty")
    if len(name.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidTrustDomain(name, f"longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    if name.startswith("["):
        raise InvalidTrustDomain(name, "an IPv6 address is not allowed as a trust domain")
    if ":" in name:
        raise InvalidTrustDomain(name, "a port or scheme is not allowed in a trust domain")
    if "@" in name:
        raise InvalidTrustDomain(name, "userinfo is not allowed in a trust domain")
    if "%" in name:
        raise InvalidTrustDomain(name, "percent-encoding is not allowed")
    if _TD_CHARS.fullmatch(name) is None:
        bad = next(c for c in name if _TD_CHARS.fullmatch(c) is None)
        hint = " (trust domains are lower-case)" if bad.isupper() else ""
        raise InvalidTrustDomain(name, f"character {bad!r} is not allowed{hint}")


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A validated SPIFFE ID: trust domain plus path (``""`` or ``/seg/seg``)."""

    trust_domain: TrustDomain
    path: str = ""

    def __post_init__(self) -> None:
        if self.path:
            _check_path(str(self), self.path)
        if len(str(self).encode()) > MAX_ID_BYTES:
            raise InvalidSpiffeId(str(self)[:64] + "...", f"longer than {MAX_ID_BYTES} bytes")

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        """Parse ``spiffe://td/path`` with the precise reason for any violation."""
        if not value:
            raise InvalidSpiffeId(value, "empty")
        if len(value.encode()) > MAX_ID_BYTES:
            raise InvalidSpiffeId(value[:64] + "...", f"longer than {MAX_ID_BYTES} bytes")
        if not value.startswith(_PREFIX):
            if value[: len(_PREFIX)].lower() == _PREFIX:
                raise InvalidSpiffeId(value, "scheme must be lower-case 'spiffe'")
            if "://" in value:
                raise InvalidSpiffeId(value, "scheme must be 'spiffe'")
            raise InvalidSpiffeId(value, "missing 'spiffe://' scheme")
        rest = value[len(_PREFIX) :]
        if "?" in rest:
            raise InvalidSpiffeId(value, "a query is not allowed")
        if "#" in rest:
            raise InvalidSpiffeId(value, "a fragment is not allowed")
        td_name, slash, path = rest.partition("/")
        if not td_name:
            raise InvalidSpiffeId(value, "trust domain is empty")
        try:
            trust_domain = TrustDomain(td_name)
        except InvalidTrustDomain as exc:
            raise InvalidSpiffeId(value, exc.reason) from None
        full_path = slash + path
        if full_path:
            _check_path(value, full_path)
        return cls(trust_domain, full_path)

    @classmethod
    def for_service_account(
        cls, trust_domain: TrustDomain | str, namespace: str, service_account: str
    ) -> SpiffeId:
        """Istio's workload identity ``spiffe://<td>/ns/<ns>/sa/<sa>``."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain(trust_domain)
        if not namespace:
            raise InvalidSpiffeId(f"{_PREFIX}{td}/ns//sa/{service_account}", "namespace is empty")
        if not service_account:
            raise InvalidSpiffeId(f"{_PREFIX}{td}/ns/{namespace}/sa/", "service account is empty")
        for label, part in (("namespace", namespace), ("service account", service_account)):
            if "/" in part:
                raise InvalidSpiffeId(
                    f"{_PREFIX}{td}/ns/{namespace}/sa/{service_account}",
                    f"{label} {part!r} must not contain '/'",
                )
        return cls(td, f"/ns/{namespace}/sa/{service_account}")

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    @property
    def namespace(self) -> str | None:
        """The namespace of an Istio-shaped ID (``/ns/<ns>/sa/<sa>``), else None."""
        parts = self.segments
        return parts[1] if len(parts) == 4 and parts[0] == "ns" and parts[2] == "sa" else None

    @property
    def service_account(self) -> str | None:
        parts = self.segments
        return parts[3] if len(parts) == 4 and parts[0] == "ns" and parts[2] == "sa" else None

    def is_member_of(self, trust_domain: TrustDomain) -> bool:
        return self.trust_domain == trust_domain

    def with_trust_domain(self, trust_domain: TrustDomain) -> SpiffeId:
        return SpiffeId(trust_domain, self.path)

    def __str__(self) -> str:
        return f"{_PREFIX}{self.trust_domain.name}{self.path}"


def _check_path(value: str, path: str) -> None:
    if not path.startswith("/"):
        raise InvalidSpiffeId(value, "path must start with '/'")
    if path.endswith("/"):
        raise InvalidSpiffeId(value, "path must not end with '/'")
    for segment in path[1:].split("/"):
        if segment == "":
            raise InvalidSpiffeId(value, "path has an empty segment")
        if segment in (".", ".."):
            raise InvalidSpiffeId(value, f"path segment {segment!r} is not allowed")
        if "%" in segment:
            raise InvalidSpiffeId(value, "percent-encoding is not allowed")
        if _SEGMENT_CHARS.fullmatch(segment) is None:
            bad = next(c for c in segment if _SEGMENT_CHARS.fullmatch(c) is None)
            raise InvalidSpiffeId(value, f"character {bad!r} is not allowed in the path")


def parse_istio_identity(value: str) -> SpiffeId:
    """Parse an ID that must have Istio's ``/ns/<ns>/sa/<sa>`` shape (exactly 4 path segments)."""
    spiffe_id = SpiffeId.parse(value)
    if spiffe_id.namespace is None:
        raise InvalidSpiffeId(value, "expected the form spiffe://<td>/ns/<namespace>/sa/<sa>")
    return spiffe_id


@dataclass(frozen=True)
class TrustDomainSet:
    """The mesh trust domain and its aliases (MeshConfig ``trustDomain`` + ``trustDomainAliases``).

    Identities in an alias domain are equivalent to the same path in the mesh domain.
    """

    primary: TrustDomain
    aliases: tuple[TrustDomain, ...] = ()

    @classmethod
    def build(cls, primary: str, aliases: Iterable[str] = ()) -> TrustDomainSet:
        td = TrustDomain(primary)
        seen: list[TrustDomain] = []
        for alias in aliases:
            a = TrustDomain(alias)
            if a != td and a not in seen:
                seen.append(a)
        return cls(td, tuple(seen))

    @property
    def all(self) -> tuple[TrustDomain, ...]:
        return (self.primary, *self.aliases)

    def __contains__(self, trust_domain: object) -> bool:
        return trust_domain in self.all

    def expand(self, spiffe_id: SpiffeId) -> tuple[SpiffeId, ...]:
        """The same path in every equivalent trust domain (the ID itself first), if it is ours."""
        if spiffe_id.trust_domain not in self.all:
            return (spiffe_id,)
        others = tuple(
            spiffe_id.with_trust_domain(td) for td in self.all if td != spiffe_id.trust_domain
        )
        return (spiffe_id, *others)

    def canonical(self, spiffe_id: SpiffeId) -> SpiffeId:
        """Map an alias-domain identity onto the primary trust domain."""
        if spiffe_id.trust_domain in self.aliases:
            return spiffe_id.with_trust_domain(self.primary)
        return spiffe_id
