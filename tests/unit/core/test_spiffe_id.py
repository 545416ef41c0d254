"""SPIFFE ID and trust-domain validation, from the SPIFFE ID specification."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsec.core.identity import (
    InvalidSpiffeId,
    InvalidTrustDomain,
    SpiffeId,
    TrustDomain,
    TrustDomainSet,
    parse_istio_identity,
)


@pytest.mark.parametrize(
    ("text", "td", "path"),
    [
        ("spiffe://cluster.local/ns/default/sa/sleep", "cluster.local", "/ns/default/sa/sleep"),
        ("spiffe://example.org", "example.org", ""),
        ("spiffe://td_with-chars.0/A.b-c_d", "td_with-chars.0", "/A.b-c_d"),
        ("spiffe://1.2.3.4/x", "1.2.3.4", "/x"),
    ],
    ids=["istio", "no-path", "allowed-chars", "ipv4-td"],
)
def test_parse_valid(text: str, td: str, path: str) -> None:
    parsed = SpiffeId.parse(text)
    assert parsed.trust_domain == TrustDomain(td)
    assert parsed.path == path
    assert str(parsed) == f"spiffe://{td}{path}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("cluster.local/ns/a", "missing 'spiffe://' scheme"),
        ("https://cluster.local/ns/a", "scheme must be 'spiffe'"),
        ("SPIFFE://example.org/a", "scheme must be lower-case 'spiffe'"),
        ("Spiffe://example.org/a", "scheme must be lower-case 'spiffe'"),
        ("spiFFe://example.org", "scheme must be lower-case 'spiffe'"),
        ("spiffe:///ns/a", "trust domain is empty"),
        (
            "spiffe://Cluster.local/ns/a",
            "character 'C' is not allowed (trust domains are lower-case)",
        ),
        ("spiffe://cluster.local:8080/a", "a port or scheme is not allowed in a trust domain"),
        ("spiffe://user@cluster.local/a", "userinfo is not allowed in a trust domain"),
        ("spiffe://cluster.local/ns/a?x=1", "a query is not allowed"),
        ("spiffe://cluster.local/ns/a#frag", "a fragment is not allowed"),
        ("spiffe://cluster.local/", "path must not end with '/'"),
        ("spiffe://cluster.local/ns//sa", "path has an empty segment"),
        ("spiffe://cluster.local/ns/./sa", "path segment '.' is not allowed"),
        ("spiffe://cluster.local/ns/../sa", "path segment '..' is not allowed"),
        ("spiffe://cluster.local/ns/a%20b", "percent-encoding is not allowed"),
        ("spiffe://cluster.local/ns/a b", "character ' ' is not allowed in the path"),
        ("spiffe://[::1]/a", "an IPv6 address is not allowed as a trust domain"),
        ("spiffe://" + "a" * 256 + "/x", "longer than 255 bytes"),
        ("spiffe://td/" + "a" * 2048, "longer than 2048 bytes"),
    ],
)
def test_parse_invalid_says_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        SpiffeId.parse(text)
    assert info.value.reason == reason
    assert reason in str(info.value)


def test_for_service_account_builds_istio_shape() -> None:
    sid = SpiffeId.for_service_account("cluster.local", "default", "sleep")
    assert str(sid) == "spiffe://cluster.local/ns/default/sa/sleep"
    assert (sid.namespace, sid.service_account) == ("default", "sleep")


@pytest.mark.parametrize(("ns", "sa"), [("", "sleep"), ("default", ""), ("a/b", "c")])
def test_for_service_account_rejects_bad_parts(ns: str, sa: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.for_service_account("cluster.local", ns, sa)


def test_istio_identity_requires_ns_sa_shape() -> None:
    assert parse_istio_identity("spiffe://td/ns/a/sa/b").service_account == "b"
    for bad in ("spiffe://td/ns/a", "spiffe://td/ns/a/sa/b/c", "spiffe://td/x/a/sa/b"):
        with pytest.raises(InvalidSpiffeId, match="expected the form"):
            parse_istio_identity(bad)


def test_trust_domain_parse_accepts_id_form_only_without_path() -> None:
    assert TrustDomain.parse("spiffe://example.org") == TrustDomain("example.org")
    assert TrustDomain.parse("example.org").id == SpiffeId.parse("spiffe://example.org")
    with pytest.raises(InvalidTrustDomain, match="must not have a path"):
        TrustDomain.parse("spiffe://example.org/x")
    with pytest.raises(InvalidTrustDomain, match="is empty"):
        TrustDomain("")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SPIFFE://example.org", "scheme must be lower-case 'spiffe'"),
        ("Spiffe://example.org", "scheme must be lower-case 'spiffe'"),
        ("spiffe://Example.org", "character 'E' is not allowed (trust domains are lower-case)"),
        ("https://example.org", "a port or scheme is not allowed in a trust domain"),
    ],
)
def test_trust_domain_parse_is_strict_about_case(text: str, reason: str) -> None:
    with pytest.raises(InvalidTrustDomain) as info:
        TrustDomain.parse(text)
    assert info.value.reason == reason


def test_trust_domain_aliases_expand_and_canonicalise() -> None:
    tds = TrustDomainSet.build("cluster.local", ["old.td", "cluster.local", "old.td", "new.td"])
    assert [t.name for t in tds.aliases] == ["old.td", "new.td"]
    sid = SpiffeId.parse("spiffe://old.td/ns/a/sa/b")
    assert [str(x) for x in tds.expand(sid)] == [
        "spiffe://old.td/ns/a/sa/b",
        "spiffe://cluster.local/ns/a/sa/b",
        "spiffe://new.td/ns/a/sa/b",
    ]
    assert str(tds.canonical(sid)) == "spiffe://cluster.local/ns/a/sa/b"
    foreign = SpiffeId.parse("spiffe://other/ns/a/sa/b")
    assert tds.expand(foreign) == (foreign,)
    assert tds.canonical(foreign) == foreign


_segment = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,15}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


@given(
    td=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,30}", fullmatch=True),
    segments=st.lists(_segment, max_size=5),
)
def test_round_trip(td: str, segments: list[str]) -> None:
    text = f"spiffe://{td}" + "".join(f"/{s}" for s in segments)
    assert str(SpiffeId.parse(text)) == text


@given(st.text(max_size=300))
def test_parse_never_raises_anything_but_invalid(text: str) -> None:
    with contextlib.suppress(InvalidSpiffeId):
        SpiffeId.parse(text)
