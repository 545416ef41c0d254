"""AuthorizationPolicy value matchers, written from Istio's documented semantics (§5.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsec.core.policy.authz_match import (
    Unusable,
    expand_principals,
    expand_trust_domains,
    match_header,
    match_host,
    match_ip_block,
    match_namespace,
    match_path,
    match_port,
    match_principal,
    match_service_account,
    match_string,
    match_trust_domain,
)

SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep"
ALIAS = "spiffe://old-td/ns/foo/sa/sleep"


def case(*values: object, id: str) -> object:
    return pytest.param(*values, id=id)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        case("GET", "GET", True, id="exact"),
        case("GET", "get", False, id="exact-case-sensitive"),
        case("GET", "GETX", False, id="exact-not-prefix"),
        case("/api*", "/api/v1", True, id="prefix"),
        case("/api*", "/ap", False, id="prefix-miss"),
        case("*.html", "/index.html", True, id="suffix"),
        case("*.html", "/index.htm", False, id="suffix-miss"),
        case("*", "x", True, id="presence"),
        case("*", "", False, id="presence-needs-non-empty"),
        case("*", None, False, id="presence-absent"),
        case("a*b", "a*b", True, id="inner-star-is-literal-prefix"),
        case("abc", None, False, id="absent"),
    ],
)
def test_match_string(pattern: str, value: str | None, expected: bool) -> None:
    assert match_string(pattern, value) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        case("*", "", True, id="presence-even-empty"),
        case("*", None, False, id="absent"),
        case("Bearer *", "Bearerx", False, id="prefix-includes-space"),
        case("Bearer*", "Bearer x", True, id="prefix"),
        case("*-json", "app-json", True, id="suffix"),
        case("v1", "v1", True, id="exact"),
    ],
)
def test_match_header(pattern: str, value: str | None, expected: bool) -> None:
    assert match_header(pattern, value) is expected


@pytest.mark.parametrize(
    ("pattern", "authority", "expected"),
    [
        case("example.com", "EXAMPLE.com", True, id="exact-ignores-case"),
        case("*.example.com", "api.Example.COM", True, id="suffix-ignores-case"),
        case("api.*", "API.example.com", True, id="prefix-ignores-case"),
        case("*", "x", True, id="presence"),
        case("example.com", "example.org", False, id="miss"),
        case("example.com", None, False, id="absent"),
    ],
)
def test_match_host(pattern: str, authority: str | None, expected: bool) -> None:
    assert match_host(pattern, authority) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        case("/info", "/info?x=1", True, id="query-ignored"),
        case("/info", "/info#frag", True, id="fragment-ignored"),
        case("/api/*", "/api/v1/x", True, id="prefix"),
        case("*/admin", "/x/admin", True, id="suffix"),
        case("*", "/", True, id="presence"),
        case("/api/{*}/get", "/api/v1/get", True, id="template-one-segment"),
        case("/api/{*}/get", "/api/v1/v2/get", False, id="template-one-segment-only"),
        case("/api/{*}/get", "/api//get", False, id="template-segment-non-empty"),
        case("/api/{**}", "/api/a/b/c", True, id="template-many-segments"),
        case("/api/{**}", "/other/a", False, id="template-literal-part"),
        case("/a.b", "/aXb", False, id="template-free-dots-literal"),
    ],
)
def test_match_path(pattern: str, path: str, expected: bool) -> None:
    assert match_path(pattern, path) is expected


@pytest.mark.parametrize(
    ("pattern", "principal", "expected"),
    [
        case("cluster.local/ns/foo/sa/sleep", SLEEP, True, id="exact"),
        case("cluster.local/ns/foo/sa/sleeper", SLEEP, False, id="exact-miss"),
        case("cluster.local/ns/foo/sa/sleep", None, False, id="plaintext"),
        case("*", SLEEP, True, id="any-authenticated"),
        case("*", None, False, id="any-authenticated-plaintext"),
        case("*", "", False, id="any-authenticated-empty"),
        case("cluster.local/ns/foo/*", SLEEP, True, id="prefix"),
        case("cluster.local/ns/bar/*", SLEEP, False, id="prefix-miss"),
        case("*/sa/sleep", SLEEP, True, id="suffix"),
        case("*/sa/sleep", "https://x/sa/sleep", False, id="suffix-requires-spiffe-scheme"),
        case("*/sa/other", SLEEP, False, id="suffix-miss"),
        case(SLEEP, SLEEP, False, id="value-with-scheme-never-matches"),
    ],
)
def test_match_principal(pattern: str, principal: str | None, expected: bool) -> None:
    assert match_principal(pattern, principal) is expected


@pytest.mark.parametrize(
    ("pattern", "principal", "expected"),
    [
        case("foo", SLEEP, True, id="exact"),
        case("fo", SLEEP, False, id="not-substring"),
        case("foo", "spiffe://cluster.local/ns/foobar/sa/sleep", False, id="whole-segment"),
        case("*", SLEEP, True, id="any"),
        case("f*", SLEEP, True, id="prefix"),
        case("*o", SLEEP, True, id="suffix"),
        case("b*", SLEEP, False, id="prefix-miss"),
        case("foo", None, False, id="plaintext"),
        case("f.o", "spiffe://cluster.local/ns/fxo/sa/sleep", False, id="dot-literal"),
    ],
)
def test_match_namespace(pattern: str, principal: str | None, expected: bool) -> None:
    assert match_namespace(pattern, principal) is expected


@pytest.mark.parametrize(
    ("pattern", "principal", "expected"),
    [
        case("foo/sleep", SLEEP, True, id="ns-and-sa"),
        case("sleep", SLEEP, True, id="sa-in-policy-namespace"),
        case("sleep", "spiffe://cluster.local/ns/bar/sa/sleep", False, id="sa-other-namespace"),
        case("bar/sleep", SLEEP, False, id="ns-mismatch"),
        case("foo/sleep", ALIAS, True, id="any-trust-domain"),
        case("foo/sleep", "spiffe://td/ns/foo/x/y/sa/sleep", True, id="segments-between"),
        case("foo/sleep", "spiffe://td/ns/foo/sa/sleep/extra", True, id="segments-after"),
        case("foo/sleep", "spiffe://td/ns/foo/sa/sleep-extra", False, id="no-name-prefix"),
        case("foo/sle", SLEEP, False, id="no-partial-name"),
        case("foo/*", SLEEP, False, id="star-is-literal"),
        case("foo/sleep", None, False, id="plaintext"),
    ],
)
def test_match_service_account(pattern: str, principal: str | None, expected: bool) -> None:
    assert match_service_account(pattern, principal, policy_namespace="foo") is expected


@pytest.mark.parametrize(
    ("pattern", "principal", "expected"),
    [
        case("cluster.local", SLEEP, True, id="exact"),
        case("cluster", SLEEP, False, id="exact-not-prefix"),
        case("*", SLEEP, True, id="any"),
        case("*", "not-spiffe", False, id="any-needs-spiffe"),
        case("cluster.*", SLEEP, True, id="prefix"),
        case("cluster.*", "spiffe://clusterx/ns/a/sa/b", False, id="prefix-miss"),
        case("*local", SLEEP, True, id="suffix"),
        case("*local", "spiffe://cluster.local.evil/ns/a/sa/b", False, id="suffix-whole-td"),
        case("old-td", ALIAS, True, id="other-td"),
        case("cluster.local", None, False, id="plaintext"),
    ],
)
def test_match_trust_domain(pattern: str, principal: str | None, expected: bool) -> None:
    assert match_trust_domain(pattern, principal) is expected


@pytest.mark.parametrize(
    ("pattern", "address", "expected"),
    [
        case("10.0.0.1", "10.0.0.1", True, id="single-ip"),
        case("10.0.0.1", "10.0.0.2", False, id="single-ip-miss"),
        case("10.0.0.0/8", "10.200.1.1", True, id="cidr"),
        case("10.0.0.5/8", "10.200.1.1", True, id="cidr-host-bits"),
        case("10.0.0.0/8", "11.0.0.1", False, id="cidr-miss"),
        case("2001:db8::/32", "2001:db8::1", True, id="ipv6"),
        case("10.0.0.0/8", "2001:db8::1", False, id="family-mismatch"),
        case("10.0.0.0/8", None, False, id="no-address"),
    ],
)
def test_match_ip_block(pattern: str, address: str | None, expected: bool) -> None:
    assert match_ip_block(pattern, address) is expected


@pytest.mark.parametrize("pattern", ["10.0.0", "not-an-ip", "10.0.0.0/33"])
def test_match_ip_block_unusable(pattern: str) -> None:
    outcome = match_ip_block(pattern, "10.0.0.1")
    assert isinstance(outcome, Unusable)
    assert pattern in outcome.reason


@pytest.mark.parametrize(
    ("pattern", "port", "expected"),
    [
        case("8080", 8080, True, id="string"),
        case(8080, 8080, True, id="int"),
        case("8080", 80, False, id="miss"),
    ],
)
def test_match_port(pattern: str | int, port: int, expected: bool) -> None:
    assert match_port(pattern, port) is expected


@pytest.mark.parametrize("pattern", ["http", "80*", "-1", "70000", ""])
def test_match_port_unusable(pattern: str) -> None:
    assert isinstance(match_port(pattern, 80), Unusable)


TDS = ("cluster.local", "old-td")


@pytest.mark.parametrize(
    ("values", "trust_domains", "expected"),
    [
        case(
            ["cluster.local/ns/foo/sa/sleep"],
            TDS,
            ("cluster.local/ns/foo/sa/sleep", "old-td/ns/foo/sa/sleep"),
            id="primary-expands-to-alias",
        ),
        case(
            ["old-td/ns/foo/sa/sleep"],
            TDS,
            ("cluster.local/ns/foo/sa/sleep", "old-td/ns/foo/sa/sleep"),
            id="alias-expands-to-primary",
        ),
        case(
            ["cluster.local/ns/foo/sa/sleep"],
            ("new-td",),
            ("new-td/ns/foo/sa/sleep",),
            id="cluster-local-means-local-td",
        ),
        case(
            ["other-td/ns/foo/sa/sleep"],
            TDS,
            ("other-td/ns/foo/sa/sleep",),
            id="unknown-td-kept",
        ),
        case(["*/ns/foo/sa/sleep"], TDS, ("*/ns/foo/sa/sleep",), id="star-td-kept"),
        case(["*"], TDS, ("*",), id="presence-kept"),
        case(["cluster.local/ns/foo/*"], TDS, ("cluster.local/ns/foo/*",), id="not-five-parts"),
        case(
            ["*local/ns/foo/sa/sleep"],
            TDS,
            ("*local/ns/foo/sa/sleep", "old-td/ns/foo/sa/sleep"),
            id="wildcard-td-kept-where-it-matches",
        ),
        case(
            ["cluster.local/ns/foo/sa/sleep", "old-td/ns/foo/sa/sleep"],
            TDS,
            ("cluster.local/ns/foo/sa/sleep", "old-td/ns/foo/sa/sleep"),
            id="deduplicated",
        ),
    ],
)
def test_expand_principals(
    values: list[str], trust_domains: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert expand_principals(values, trust_domains) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        case(["cluster.local"], ("cluster.local", "old-td"), id="primary"),
        case(["old-td"], ("cluster.local", "old-td"), id="alias"),
        case(["other"], ("other",), id="unknown-kept"),
        case(["cluster.*"], ("cluster.*",), id="wildcard-kept"),
    ],
)
def test_expand_trust_domains(values: list[str], expected: tuple[str, ...]) -> None:
    assert expand_trust_domains(values, TDS) == expected


# --- properties --------------------------------------------------------------------------------

_label = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
_td = st.from_regex(r"[a-z][a-z0-9.-]{0,10}[a-z]", fullmatch=True)


@given(td=_td, ns=_label, sa=_label)
def test_written_principal_matches_its_identity(td: str, ns: str, sa: str) -> None:
    principal = f"spiffe://{td}/ns/{ns}/sa/{sa}"
    assert match_principal(f"{td}/ns/{ns}/sa/{sa}", principal)
    assert match_principal("*", principal)
    assert match_principal(f"{td}/ns/{ns}/*", principal)
    assert match_principal(f"*/sa/{sa}", principal)
    assert match_namespace(ns, principal)
    assert match_service_account(f"{ns}/{sa}", principal, policy_namespace="other")
    assert match_trust_domain(td, principal)


@given(td=_td, alias=_td, ns=_label, sa=_label, written_with_alias=st.booleans())
def test_expansion_makes_every_equivalent_identity_match(
    td: str, alias: str, ns: str, sa: str, written_with_alias: bool
) -> None:
    trust_domains = (td, alias)
    written = f"{alias if written_with_alias else td}/ns/{ns}/sa/{sa}"
    expanded = expand_principals([written], trust_domains)
    for candidate in trust_domains:
        principal = f"spiffe://{candidate}/ns/{ns}/sa/{sa}"
        assert any(match_principal(v, principal) for v in expanded)


@given(value=st.text(max_size=40), principal=st.one_of(st.none(), st.text(max_size=60)))
def test_matchers_never_raise(value: str, principal: str | None) -> None:
    for matcher in (match_principal, match_namespace, match_trust_domain):
        assert isinstance(matcher(value, principal), bool)
    assert isinstance(match_service_account(value, principal, "ns"), bool)
    assert isinstance(match_path(value, principal), bool)
    assert isinstance(match_ip_block(value, principal), (bool, Unusable))
    assert isinstance(match_port(value, 80), (bool, Unusable))
