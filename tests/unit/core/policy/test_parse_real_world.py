"""Real-world shapes (kubectl get -o yaml, Helm output) load unchanged, with no diagnostics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from meshsec.config.sources.files import load_snapshot
from meshsec.core.policy.analyze import collect_diagnostics
from meshsec.core.policy.model import MtlsMode

KUBECTL = Path(__file__).parents[3] / "fixtures" / "kubectl"


def test_kubectl_and_helm_output_load_without_diagnostics() -> None:
    snap = load_snapshot([KUBECTL])
    assert collect_diagnostics(snap) == ()
    assert [p.meta.key for p in snap.peer_authentications] == [
        "istio-system/default",
        "billing/legacy",
    ]
    legacy = snap.peer_authentications[1]
    assert dict(legacy.port_level_mtls) == {8081: MtlsMode.DISABLE}
    assert legacy.meta.creation_timestamp == datetime(2024, 4, 2, 15, 30, 1, tzinfo=UTC)
    assert legacy.origin.line == 34  # its "- apiVersion" item line
    assert [a.meta.key for a in snap.authorization_policies] == ["billing/billing-allow-frontend"]
    assert [d.meta.key for d in snap.destination_rules] == ["billing/billing"]
    assert [w.meta.key for w in snap.workloads] == ["billing/billing", "billing/legacy-billing"]
    (svc,) = snap.services
    assert svc.ports[0].target_port == "http"
    assert snap.namespace("billing") is not None
    assert snap.service_accounts[0].meta.key == "billing/billing"
