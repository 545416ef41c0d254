"""AuthorizationPolicy value matchers, as pure functions over strings.

Each function answers one question Istio's RBAC filter answers, with Istio's semantics
(``istio-contracts.md`` §5.5). Values written in a policy use four forms:

* ``"abc"`` exact, ``"abc*"`` prefix, ``"*abc"`` suffix, ``"*"`` presence (any non-empty value).

A peer principal is the URI SAN of the client certificate (``spiffe://td/ns/x/sa/y``); it is
``None`` for plaintext, and then no principal/namespace/serviceAccount/trustDomain value matches
(their ``not*`` forms then do).

Some values cannot be turned into a matcher at all — a port that is not a number, an IP block
that is not an address or CIDR, an HTTP-only field on a TCP connection. Istio does not drop such a
value silently: the matcher functions return an :class:`Unusable` (with a reason) and the rule
evaluator decides what that means (ALLOW rule skipped, DENY value ignored — see ``authz.py``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from meshsec.core.policy.document import is_decimal, show_value, too_many_port_digits

SPIFFE_PREFIX = "spiffe://"
CLUSTER_LOCAL = "cluster.local"


@dataclass(frozen=True)
class Unusable:
    """A policy value that Istio cannot turn into a matcher, and why."""

    reason: str


#: The outcome of matching one policy value: True/False, or why the value could not be used.
Outcome = bool | Unusable


# ---------------------------------------------------------------------------------------------
# The four value forms


def match_string(pattern: str, value: str | None, *, ignore_case: bool = False) -> bool:
    """Istio's string matcher: exact, ``prefix*``, ``*suffix``; ``*`` = any non-empty value."""
    if value is None:
        return False
    if pattern == "*":
        return value != ""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def match_header(pattern: str, value: str | None) -> bool:
    """A request header (and ``:method``): ``*`` means the header is present (even if empty)."""
    if value is None:
        return False
    if pattern == "*":
        return True
    return match_string(pattern, value)


def match_host(pattern: str, authority: str | None) -> bool:
    """``hosts``: matched against the ``:authority`` header, case-insensitively; ``*`` = present."""
    if authority is None:
        return False
    if pattern == "*":
        return True
    return match_string(pattern, authority, ignore_case=True)


def match_path(pattern: str, path: str | None) -> bool:
    """``paths``: matched against the path without query or fragment.

    ``{*}`` (one non-empty segment) and ``{**}`` (anything, including ``/``) make the value a path
    template; otherwise the four usual forms apply.
    """
    if path is None:
        return False
    bare = path.split("?", 1)[0].split("#", 1)[0]
    if "{*}" in pattern or "{**}" in pattern:
        return _path_template(pattern).fullmatch(bare) is not None
    return match_string(pattern, bare)


@lru_cache(maxsize=1024)
def _path_template(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\*\*\}|\{\*\})", pattern)
    out = []
    for part in parts:
        if part == "{**}":
            out.append(r".*")
        elif part == "{*}":
            out.append(r"[^/]+")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


# ---------------------------------------------------------------------------------------------
# Peer identity (all matched against the peer principal, the certificate's URI SAN)


def match_principal(pattern: str, principal: str | None) -> bool:
    """``principals`` / ``source.principal``: the value is written without ``spiffe://``.

    ``"td/ns/x/sa/y"`` → exactly ``spiffe://td/ns/x/sa/y``; ``"*"`` → any authenticated peer;
    ``"prefix*"`` → starts with ``spiffe://prefix``; ``"*suffix"`` → ``spiffe://`` then anything
    ending in ``suffix``. A value that itself starts with ``spiffe://`` therefore never matches
    (Istio adds the prefix again) — the analyzer warns about it.
    """
    if not principal:
        return False
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        return (
            principal.startswith(SPIFFE_PREFIX)
            and len(principal) >= len(SPIFFE_PREFIX) + len(suffix)
            and principal.endswith(suffix)
        )
    if pattern.endswith("*"):
        return principal.startswith(SPIFFE_PREFIX + pattern[:-1])
    return principal == SPIFFE_PREFIX + pattern


def match_namespace(pattern: str, principal: str | None) -> bool:
    """``namespaces`` / ``source.namespace``: the principal contains ``/ns/<value>/``.

    A ``*`` anywhere in the value matches any run of characters (``"*"`` = any namespace,
    ``"team-*"`` = namespaces starting with ``team-``).
    """
    if not principal:
        return False
    return _namespace_regex(pattern).fullmatch(principal) is not None


@lru_cache(maxsize=4096)
def _namespace_regex(pattern: str) -> re.Pattern[str]:
    body = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.compile(f".*/ns/{body}/.*", re.DOTALL)


def match_service_account(pattern: str, principal: str | None, policy_namespace: str) -> bool:
    """``serviceAccounts`` / ``source.serviceAccount``: ``"ns/sa"``, or ``"sa"`` (policy namespace).

    Matches ``spiffe://<any td>/ns/<ns>/…/sa/<sa>`` with optional extra path segments between
    ``ns`` and ``sa`` and after ``sa`` (so ``sa/foo`` does not match ``sa/foo-bar``). Values are
    literal: ``*`` has no special meaning here.
    """
    if not principal:
        return False
    namespace, slash, account = pattern.partition("/")
    if not slash:
        namespace, account = policy_namespace, pattern
    return _service_account_regex(namespace, account).fullmatch(principal) is not None


@lru_cache(maxsize=4096)
def _service_account_regex(namespace: str, account: str) -> re.Pattern[str]:
    ns, sa = re.escape(namespace), re.escape(account)
    return re.compile(f"spiffe://.+/ns/{ns}/(.+/|)sa/{sa}(/.+)?", re.DOTALL)


def match_trust_domain(pattern: str, principal: str | None) -> bool:
    """``trustDomains``: the trust domain of the peer principal.

    ``"example.org"`` → principal starts with ``spiffe://example.org/``; ``"*"`` → any SPIFFE
    principal; ``"example.*"`` / ``"*.org"`` → the trust domain (no ``/``) starts / ends with it.
    """
    if not principal or not principal.startswith(SPIFFE_PREFIX):
        return False
    if pattern == "*":
        return True
    trust_domain, slash, _ = principal[len(SPIFFE_PREFIX) :].partition("/")
    if pattern.endswith("*"):
        return bool(slash) and trust_domain.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return bool(slash) and trust_domain.endswith(pattern[1:])
    return principal.startswith(f"{SPIFFE_PREFIX}{pattern}/")


# ---------------------------------------------------------------------------------------------
# Addresses and ports


def match_ip_block(pattern: str, address: str | None) -> Outcome:
    """``ipBlocks`` / ``source.ip`` and friends: a single IP or a CIDR (host bits allowed)."""
    network = _parse_network(pattern)
    if isinstance(network, Unusable):
        return network
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.version == network.version and ip in network


@lru_cache(maxsize=4096)
def _parse_network(pattern: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | Unusable:
    try:
        return ipaddress.ip_network(pattern.strip(), strict=False)
    except ValueError:
        return Unusable(f"{pattern!r} is not an IP address or CIDR block")


def parse_port(pattern: str | int) -> int | Unusable:
    """A port value as written in a policy (string or number), 0–65535."""
    too_long = too_many_port_digits(pattern.strip() if isinstance(pattern, str) else pattern)
    if too_long is not None:  # before str()/int(): both raise on numbers over 4300 digits
        return Unusable(too_long)
    text = str(pattern).strip()
    if not is_decimal(text):
        return Unusable(f"port {show_value(pattern)} is not a number")
    port = int(text)
    if port > 65535:
        return Unusable(f"port {pattern!r} is out of range 0-65535")
    return port


def match_port(pattern: str | int, port: int) -> Outcome:
    """``ports`` / ``destination.port``: exact port number (no wildcards, no ranges)."""
    wanted = parse_port(pattern)
    if isinstance(wanted, Unusable):
        return wanted
    return wanted == port


# ---------------------------------------------------------------------------------------------
# Trust-domain alias expansion (applied to principals and notPrincipals, incl. source.principal)


def expand_principals(values: Sequence[str], trust_domains: Sequence[str]) -> tuple[str, ...]:
    """Rewrite principals so that they also match every equivalent trust domain.

    ``trust_domains`` is the mesh trust domain followed by its aliases. A principal of the form
    ``<td>/ns/<ns>/sa/<sa>`` (exactly five ``/``-separated parts) whose ``<td>`` is a known trust
    domain, or the literal ``cluster.local`` (which always means "the local trust domain"), becomes
    one principal per trust domain. A ``<td>`` with a leading/trailing ``*`` that matches a trust
    domain is kept as written for that trust domain. Principals with ``*`` as trust domain, other
    shapes, or unknown trust domains are kept unchanged.
    """
    out: list[str] = []
    for value in values:
        for expanded in _expand_principal(value, trust_domains):
            if expanded not in out:
                out.append(expanded)
    return tuple(out)


def _expand_principal(value: str, trust_domains: Sequence[str]) -> Iterable[str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[0] == "*":
        return (value,)
    td = parts[0]
    known = td == CLUSTER_LOCAL or any(_td_wildcard_match(td, t) for t in trust_domains)
    if not known or not trust_domains:
        return (value,)
    rest = "/".join(parts[1:])
    return tuple(
        value if "*" in td and _td_wildcard_match(td, t) else f"{t}/{rest}" for t in trust_domains
    )


def _td_wildcard_match(pattern: str, trust_domain: str) -> bool:
    if pattern == trust_domain:
        return True
    if pattern.startswith("*"):
        return trust_domain.endswith(pattern[1:])
    if pattern.endswith("*"):
        return trust_domain.startswith(pattern[:-1])
    return False


def expand_trust_domains(values: Sequence[str], trust_domains: Sequence[str]) -> tuple[str, ...]:
    """``trustDomains`` values naming a known trust domain stand for all of them."""
    out: list[str] = []
    for value in values:
        for expanded in trust_domains if value in trust_domains else (value,):
            if expanded not in out:
                out.append(expanded)
    return tuple(out)
