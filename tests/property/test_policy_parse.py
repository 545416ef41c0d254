"""Parser robustness: whatever the input, the result is a snapshot plus diagnostics, never an
exception; a broken document never removes a good one next to it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsec.config.sources.yaml_lines import parse_yaml_text
from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.analyze import collect_diagnostics
from meshsec.core.policy.document import SourceDocument
from meshsec.core.policy.parse import parse_documents
from meshsec.core.policy.snapshot import PolicySnapshot

KNOWN_CODES = {c.code for c in dg.CATALOG}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GOOD = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {"name": "good", "namespace": "ns"},
    "spec": {"mtls": {"mode": "STRICT"}},
}

TEMPLATES: list[dict[str, Any]] = [
    GOOD,
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "w", "namespace": "ns", "labels": {"a": "b"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "mtls": {"mode": "PERMISSIVE"},
            "portLevelMtls": {8080: {"mode": "DISABLE"}},
        },
    },
    {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {
            "host": "web",
            "exportTo": ["."],
            "trafficPolicy": {
                "tls": {"mode": "SIMPLE", "subjectAltNames": ["a"]},
                "connectionPool": {"tcp": {"maxConnections": 1}},
                "portLevelSettings": [{"port": {"number": 80}, "tls": {"mode": "DISABLE"}}],
            },
            "subsets": [{"name": "v1", "labels": {"v": "1"}}],
        },
    },
    {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "a", "namespace": "ns"},
        "spec": {
            "action": "DENY",
            "selector": {"matchLabels": {"app": "web"}},
            "rules": [
                {
                    "from": [{"source": {"principals": ["x"], "ipBlocks": ["10.0.0.0/8"]}}],
                    "to": [{"operation": {"ports": ["80"], "methods": ["GET"]}}],
                    "when": [{"key": "source.namespace", "values": ["a"]}],
                }
            ],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    },
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
    },
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": "trustDomain: td\ntrustDomainAliases: [a]\n"},
    },
    {"apiVersion": "v1", "kind": "List", "items": [GOOD]},
    {"apiVersion": "authentication.istio.io/v1alpha1", "kind": "MeshPolicy", "spec": {"peers": []}},
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "STRICT",
            "DISABLE",
            "ISTIO_MUTUAL",
            "*",
            "*.local",
            "",
            "8080",
            "spiffe://x",
            "a/b",
            "\u00b2",
            "\u0663",
        ]
    ),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "spec",
            "metadata",
            "mtls",
            "mode",
            "selector",
            "matchLabels",
            "rules",
            "from",
            "source",
            "tls",
            "portLevelMtls",
            "name",
            "namespace",
            "items",
            "kind",
            "apiVersion",
        ]
    ),
    st.integers(min_value=-5, max_value=70000),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=20,
)


def _check(snapshot: PolicySnapshot) -> None:
    assert isinstance(snapshot, PolicySnapshot)
    for diag in collect_diagnostics(snapshot):
        assert diag.code in KNOWN_CODES
        assert diag.message
        assert diag.line >= 0


def _docs(data: list[object]) -> list[SourceDocument]:
    return [SourceDocument("p.yaml", i, item) for i, item in enumerate(data)]


@SETTINGS
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text: str) -> None:
    loaded = parse_yaml_text(text, file="t.yaml")
    _check(
        parse_documents(
            loaded.documents, yaml_parser=parse_yaml_text, diagnostics=loaded.diagnostics
        )
    )


@SETTINGS
@given(st.lists(values, max_size=4))
def test_arbitrary_documents_never_raise(data: list[object]) -> None:
    _check(parse_documents(_docs(data), yaml_parser=parse_yaml_text))


@SETTINGS
@given(values)
def test_arbitrary_yaml_documents_round_trip_through_the_loader(value: object) -> None:
    try:
        text = yaml.safe_dump_all([value, GOOD], allow_unicode=True)
    except (yaml.YAMLError, ValueError, TypeError):
        return  # not representable as YAML
    loaded = parse_yaml_text(text, file="t.yaml")
    snapshot = parse_documents(loaded.documents, yaml_parser=parse_yaml_text)
    _check(snapshot)
    assert "ns/good" in {p.meta.key for p in snapshot.peer_authentications}


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _replace(node: Any, path: tuple[object, ...], value: object) -> Any:
    if not path:
        return value
    node = copy.copy(node)
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


@SETTINGS
@given(st.sampled_from(TEMPLATES), st.data(), values)
def test_mutated_resources_never_raise_and_neighbours_survive(
    template: dict[str, Any], data: st.DataObject, value: object
) -> None:
    path = data.draw(st.sampled_from(_paths(template)))
    mutated = _replace(copy.deepcopy(template), path, value)
    snapshot = parse_documents(
        _docs([GOOD, mutated, GOOD | {"metadata": {"name": "last", "namespace": "ns"}}]),
        yaml_parser=parse_yaml_text,
    )
    _check(snapshot)
    names = [p.meta.key for p in snapshot.peer_authentications]
    assert names[0] == "ns/good"
    assert names[-1] == "ns/last"


@SETTINGS
@given(st.sampled_from(TEMPLATES), st.data())
def test_truncated_yaml_never_raises(template: dict[str, Any], data: st.DataObject) -> None:
    text = yaml.safe_dump(template) + "---\n" + yaml.safe_dump(GOOD)
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    loaded = parse_yaml_text(
        text[:cut]
        + "\n---\n"
        + yaml.safe_dump(GOOD | {"metadata": {"name": "z", "namespace": "ns"}}),
        file="t",
    )
    snapshot = parse_documents(
        loaded.documents, yaml_parser=parse_yaml_text, diagnostics=loaded.diagnostics
    )
    _check(snapshot)
    assert "ns/z" in {p.meta.key for p in snapshot.peer_authentications}


def test_timestamps_of_any_form_are_handled() -> None:
    for stamp in ("2024-01-01T00:00:00Z", "2024-01-01", 5, datetime(2024, 1, 1), [], "x"):
        doc = copy.deepcopy(GOOD)
        doc["metadata"]["creationTimestamp"] = stamp
        _check(parse_documents(_docs([doc])))
