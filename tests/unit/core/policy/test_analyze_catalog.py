"""Every code in the catalog is produced by some input (no dead codes, no uncatalogued ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsec.config.sources.files import load_snapshot
from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.analyze import collect_diagnostics

META = "metadata: {name: NAME, namespace: foo}\n"
PA = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n" + META.replace("NAME", "p")
AP = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n" + META.replace("NAME", "a")
DR = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n" + META.replace("NAME", "d")
WEB = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: foo}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
"""
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"

INPUTS: dict[str, str | None] = {
    "MS0001": "a: [\n",
    "MS0002": "- 1\n",
    "MS0003": "metadata: {name: x}\n",
    "MS0004": "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
    "MS0005": PA + "---\n" + PA,
    "MS0006": None,  # a missing path
    "MS0007": None,  # an empty directory
    "MS0101": PA + "spec: {mtlz: {}}\n",
    "MS0102": PA + "spec: {selector: {matchLabels: {v: 1}}}\n",
    "MS0103": PA + "spec: {mtls: {mode: Strict}}\n",
    "MS0104": DR + "spec: {}\n",
    "MS0105": PA + "spec: {selector: {matchLabels: {a: b}}, portLevelMtls: {0: {mode: STRICT}}}\n",
    "MS0106": PA + "spec: {portLevelMtls: {80: {mode: STRICT}}}\n",
    "MS0107": PA + "spec: {selector: {matchLabels: {'a b': c}}}\n",
    "MS0108": PA.replace("name: p", "name: P"),
    "MS0109": PA.replace("namespace: foo}", "namespace: foo, creationTimestamp: never}"),
    "MS0110": AP + "spec: {rules: [{from: [{source: {ipBlocks: [nope]}}]}]}\n",
    "MS0112": PA + "spec: {}\nspec: {}\n",
    "MS0113": CM + "data:\n  mesh: |\n    rootNamespace: Not_Valid\n",
    "MS0114": "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\n",
    "MS0201": "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\n"
    "metadata: {name: default}\n",
    "MS0202": PA.replace("security.istio.io/v1", "security.istio.io/v2"),
    "MS0204": AP + "spec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}\n",
    "MS0205": AP + "spec: {targetRefs: [{kind: Gateway, name: gw}]}\n",
    "MS0301": WEB
    + PA.replace("name: p", "name: default")
    + "spec: {mtls: {mode: STRICT}}\n---\n"
    + DR
    + "spec: {host: web, trafficPolicy: {tls: {mode: DISABLE}}}\n",
    "MS0302": PA + "---\n" + PA.replace("name: p", "name: q"),
    "MS0303": PA.replace("foo", "istio-system") + "spec: {selector: {matchLabels: {a: b}}}\n",
    "MS0304": PA,
    "MS0305": DR + "spec: {host: a, trafficPolicy: {portLevelSettings: [{port: {number: 1}}, "
    "{port: {number: 1}}]}}\n",
    "MS0306": WEB
    + DR
    + "spec: {host: web, trafficPolicy: {portLevelSettings: [{port: {number: 8080}}]}}\n",
    "MS0307": AP + "spec: {rules: [{from: [{source: {principals: [td.x/ns/a/sa/b]}}]}]}\n",
    "MS0308": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: foo}\n---\n"
    + AP
    + "spec: {rules: [{from: [{source: {serviceAccounts: [api]}}]}]}\n",
    "IST0101": "apiVersion: v1\nkind: Namespace\nmetadata: {name: foo}\n---\n"
    + WEB
    + AP
    + "spec: {rules: [{from: [{source: {namespaces: [bar]}}]}]}\n",
    "IST0127": WEB + AP + "spec: {selector: {matchLabels: {app: api}}}\n",
    "IST0128": DR + "spec: {host: a, trafficPolicy: {tls: {mode: SIMPLE}}}\n",
    "IST0129": DR + "spec: {host: a, trafficPolicy: {portLevelSettings: [{port: {number: 443}, "
    "tls: {mode: SIMPLE}}]}}\n",
}


def test_every_catalog_code_has_an_input() -> None:
    assert set(INPUTS) == {c.code for c in dg.CATALOG}


@pytest.mark.parametrize("code", sorted(INPUTS))
def test_code_is_produced(code: str, tmp_path: Path) -> None:
    text = INPUTS[code]
    if code == "MS0006":
        target = tmp_path / "missing"
    elif code == "MS0007":
        target = tmp_path
    else:
        assert text is not None
        target = tmp_path / "input.yaml"
        target.write_text(text, encoding="utf-8")
    diags = collect_diagnostics(load_snapshot([target]))
    produced = [d for d in diags if d.code == code]
    assert produced, [str(d) for d in diags]
    assert produced[0].level is dg.lookup(code).level or code == "MS0205"
