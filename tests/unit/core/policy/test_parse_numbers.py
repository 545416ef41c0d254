"""Numbers: one port written two ways, and numbers too long for int()/str().

Python refuses to convert decimal text over 4300 digits (and str() of such an int); PyYAML's
message then told users to call ``sys.set_int_max_str_digits()``, and a quoted long port made
the parser raise. Every such input is a diagnostic saying how many digits and the valid range.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsec.core.policy.authz_match import Unusable, parse_port
from meshsec.core.policy.document import (
    SourceDocument,
    count_digits,
    parse_port_text,
    show_value,
)
from meshsec.core.policy.parse import parse_documents
from tests.unit.core.policy.policy_yaml import errors, snapshot_of

HUGE = "9" * 5000
PA = (
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
    "metadata: {name: p, namespace: ns}\nspec:\n  selector: {matchLabels: {app: a}}\n"
)
DR = (
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
    "metadata: {name: d, namespace: ns}\nspec:\n  host: a\n"
)
AP = (
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
    "metadata: {name: a, namespace: ns}\nspec:\n"
)
SVC = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec:\n"


@pytest.mark.parametrize(
    ("keys", "line"),
    [(('"8080"', "8080"), 8), (("8080", '"8080"'), 8), (("8080", '"08080"'), 8)],
    ids=["string-then-int", "int-then-string", "leading-zero"],
)
def test_port_level_mtls_port_given_twice_is_an_error(keys: tuple[str, str], line: int) -> None:
    text = (
        PA
        + f"  portLevelMtls:\n    {keys[0]}: {{mode: STRICT}}\n    {keys[1]}: {{mode: DISABLE}}\n"
    )
    snap = snapshot_of(text)
    (problem,) = errors(snap)
    assert problem.code == "MS0112"
    assert problem.line == line
    assert "portLevelMtls port 8080 appears twice" in problem.message
    assert snap.peer_authentications == ()  # rejected, not silently merged


def test_port_level_mtls_distinct_ports_still_load() -> None:
    text = PA + '  portLevelMtls:\n    "8080": {mode: STRICT}\n    9090: {mode: DISABLE}\n'
    (pa,) = snapshot_of(text).peer_authentications
    assert sorted(pa.port_level_mtls) == [8080, 9090]


HUGE_CASES = {
    "yaml-int-value": (PA + f"  mtls: {{mode: {HUGE}}}\n", 6, "too many digits (5000)"),
    "yaml-hex-value": (
        DR + f"  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 0x{'f' * 5000}}}\n",
        8,
        "too many digits (6021)",
    ),
    "dr-port-string": (
        DR + f'  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: "{HUGE}"}}\n',
        8,
        "port has too many digits (5000): ports are 1-65535",
    ),
    "plm-explicit-key": (
        PA + f'  portLevelMtls:\n    ? "{HUGE}"\n    : {{mode: STRICT}}\n',
        7,
        "portLevelMtls port has too many digits (5000)",
    ),
    "authz-ports": (
        AP + f'  rules:\n  - to: [{{operation: {{ports: ["{HUGE}"]}}}}]\n',
        6,
        "port has too many digits (5000)",
    ),
    "authz-destination-port": (
        AP + f'  rules:\n  - when: [{{key: destination.port, values: ["{HUGE}"]}}]\n',
        6,
        "destination.port value has too many digits (5000)",
    ),
    "service-port": (SVC + f'  ports:\n  - port: "{HUGE}"\n', 6, "port has too many digits (5000)"),
    "service-target-port": (
        SVC + f'  ports:\n  - port: 80\n    targetPort: "{HUGE}"\n',
        7,
        "targetPort has too many digits (5000)",
    ),
    "six-digit-port": (
        SVC + '  ports:\n  - port: "123456"\n',
        6,
        "port 123456 is out of range 1-65535",
    ),
    "21-digit-port": (
        SVC + f'  ports:\n  - port: "{"1" * 21}"\n',
        6,
        "port has too many digits (21): ports are 1-65535",
    ),
}


@pytest.mark.parametrize(("text", "line", "says"), HUGE_CASES.values(), ids=HUGE_CASES.keys())
def test_numbers_with_too_many_digits_are_diagnostics(text: str, line: int, says: str) -> None:
    snap = snapshot_of(text)
    found = errors(snap)
    assert any(d.line == line and says in d.message for d in found), [d.message for d in found]
    for diag in snap.diagnostics:
        assert "set_int_max_str_digits" not in diag.message
        assert len(diag.message) < 400  # never the 5000-digit number itself
    assert snap.peer_authentications == snap.destination_rules == ()
    assert snap.services == snap.authorization_policies == ()


def test_huge_numbers_in_hand_built_documents_do_not_raise() -> None:
    """The core is also fed by other loaders: a document holding a huge int is a diagnostic."""
    data = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"ports": [{"port": 1 << 20_000}]},
    }
    snap = parse_documents([SourceDocument("f", 0, data, 1, {})])
    (problem,) = errors(snap)
    assert "port has too many digits (6021)" in problem.message


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (HUGE, "too many digits (5000)"),
        (10**5000, "too many digits (5001)"),
        ("70000", "out of range"),
    ],
    ids=["huge-string", "huge-int", "out-of-range"],
)
def test_authz_matcher_port_never_raises(pattern: str | int, says: str) -> None:
    result = parse_port(pattern)
    assert isinstance(result, Unusable)
    assert says in result.reason


@given(st.integers(min_value=-(10**60), max_value=10**60))
def test_count_digits_matches_str(value: int) -> None:
    assert count_digits(value) == len(str(abs(value)))


@pytest.mark.parametrize("value", [10**k + d for k in range(1, 400, 7) for d in (-1, 0, 1)])
def test_count_digits_at_powers_of_ten(value: int) -> None:
    assert count_digits(value) == len(str(value))


def test_parse_port_text_and_show_value() -> None:
    assert [parse_port_text(t) for t in ("1", "65535", "0", "65536", "08080", "²", HUGE)] == [
        1,
        65535,
        None,
        None,
        8080,
        None,
        None,
    ]
    assert show_value(10**5000) == "(a number with 5001 digits)"
    assert show_value(HUGE) == repr(HUGE)[:77] + "..."  # 80 characters
