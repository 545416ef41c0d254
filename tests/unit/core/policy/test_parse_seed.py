"""The seed article's YAML (tests/fixtures/seed): the good parts load, the mistakes are explained
with their exact lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from meshsec.config.sources.files import load_snapshot
from meshsec.core.policy.analyze import collect_diagnostics
from meshsec.core.policy.diagnostics import Level
from meshsec.core.policy.model import MtlsMode, TlsMode
from meshsec.core.policy.peer_authn import build_peer_authentication_index

SEED = Path(__file__).parents[3] / "fixtures" / "seed"


def _line(path: Path, line: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[line - 1].strip()


def test_seed_mesh_scenario_loads_cleanly() -> None:
    snap = load_snapshot([SEED / "mesh"])
    diags = collect_diagnostics(snap)
    assert [(d.code, d.level) for d in diags] == [("MS0004", Level.INFO)]  # the VirtualService
    modes = {p.meta.key: p.mtls for p in snap.peer_authentications}
    assert modes == {
        "istio-system/default": MtlsMode.STRICT,
        "my-namespace/default": MtlsMode.PERMISSIVE,
        "my-namespace/my-service-policy": MtlsMode.STRICT,
        "sensitive/default": MtlsMode.STRICT,
        "sensitive/legacy-service": MtlsMode.DISABLE,
    }
    assert {p.api_version for p in snap.peer_authentications} == {"security.istio.io/v1beta1"}
    assert len(snap.destination_rules) == 2
    for rule in snap.destination_rules:
        assert rule.api_version == "networking.istio.io/v1alpha3"
        assert rule.traffic_policy is not None
        assert rule.traffic_policy.tls is not None
        assert rule.traffic_policy.tls.mode is TlsMode.ISTIO_MUTUAL
    assert snap.mesh_config.origin is not None
    assert snap.mesh_config.root_namespace == "istio-system"
    assert [w.meta.key for w in snap.workloads] == ["my-namespace/my-service", "sensitive/legacy"]


def test_seed_mesh_scenario_composes_as_the_article_says() -> None:
    snap = load_snapshot([SEED / "mesh"])
    index = build_peer_authentication_index(snap.peer_authentications, snap.mesh_config)
    modes = {w.name: index.compose(w.namespace, w.labels).mode for w in snap.workloads}
    assert modes == {"my-service": MtlsMode.STRICT, "legacy": MtlsMode.DISABLE}
    assert index.namespace_mode("my-namespace").mode.value == "PERMISSIVE"
    assert index.namespace_mode("sensitive").mode.value == "STRICT"


@pytest.mark.parametrize(
    ("file", "code", "line", "text", "says"),
    [
        (
            "session-cache.yaml",
            "MS0101",
            12,
            "maxSessionAge: 300s",
            "unknown field 'maxSessionAge' in ClientTLSSettings",
        ),
        (
            "session-cache.yaml",
            "MS0101",
            13,
            "maxSessionAgeGrace: 50s",
            "unknown field 'maxSessionAgeGrace'",
        ),
        (
            "meshpolicy.yaml",
            "MS0201",
            3,
            "kind: MeshPolicy",
            "use a PeerAuthentication without a selector in the root namespace",
        ),
        (
            "complete-example.yaml",
            "MS0001",
            17,
            "host: *.local",
            'quote it (e.g. host: "*.local")',
        ),
        (
            "global-permissive.yaml",
            "MS0112",
            12,
            "apiVersion: security.istio.io/v1beta1",
            "separate them with a '---' line",
        ),
    ],
    ids=["maxSessionAge", "maxSessionAgeGrace", "MeshPolicy", "unquoted-wildcard", "no-separator"],
)
def test_seed_mistakes_are_reported_on_their_lines(
    file: str, code: str, line: int, text: str, says: str
) -> None:
    path = SEED / "mistakes" / file
    snap = load_snapshot([path])
    found = [d for d in snap.diagnostics if d.code == code and d.line == line]
    assert found, [str(d) for d in snap.diagnostics]
    assert found[0].level is Level.ERROR
    assert found[0].file == str(path)
    assert says in found[0].message
    assert _line(path, line) == text


def test_seed_meshpolicy_translation_is_exact() -> None:
    snap = load_snapshot([SEED / "mistakes" / "meshpolicy.yaml"])
    (diag,) = snap.diagnostics
    assert diag.resource == "MeshPolicy default"
    assert "apiVersion: security.istio.io/v1, kind: PeerAuthentication" in diag.message
    assert "{name: default, namespace: istio-system}" in diag.message
    assert "spec: {mtls: {mode: STRICT}}" in diag.message
    assert "credentialName have no equivalent" in diag.message
    assert snap.peer_authentications == ()


def test_seed_complete_example_keeps_the_document_before_the_broken_one() -> None:
    snap = load_snapshot([SEED / "mistakes" / "complete-example.yaml"])
    assert [p.meta.key for p in snap.peer_authentications] == ["istio-system/default"]
    assert snap.destination_rules == ()


def test_seed_complete_example_once_quoted_conflicts_with_the_legacy_workload(
    tmp_path: Path,
) -> None:
    """The article's mesh-wide ISTIO_MUTUAL rule plus its DISABLE legacy workload: the conflict
    Istio's removed IST0113 used to report."""
    shutil.copytree(SEED / "mesh", tmp_path / "mesh")
    fixed = (SEED / "mistakes" / "complete-example.yaml").read_text(encoding="utf-8")
    fixed = fixed.replace("host: *.local", 'host: "*.local"').split("---\n", 1)[1]
    (tmp_path / "mesh" / "zz-global-dr.yaml").write_text(fixed, encoding="utf-8")
    diags = collect_diagnostics(load_snapshot([tmp_path / "mesh"]))
    (conflict,) = [d for d in diags if d.code == "MS0301"]
    assert conflict.resource == "DestinationRule istio-system/default"
    assert "legacy-service.sensitive.svc.cluster.local:9000" in conflict.message
    assert "Deployment sensitive/legacy" in conflict.message
    assert "DISABLE" in conflict.message
    assert _line(tmp_path / "mesh" / "zz-global-dr.yaml", conflict.line) == "mode: ISTIO_MUTUAL"
