"""The ``Expectations`` documents of a mesh directory (what ``meshsec up --check`` runs)::

    apiVersion: meshsec.io/v1alpha1
    kind: Expectations
    metadata: {name: photo-sharing}
    spec:
      expectations:
      - from: photo-frontend.photo-ns        # a Workload (name.namespace[@cluster]), or "outside"
        to: photo-backend.photo-ns:8080      # service[.namespace]:port (namespace: the caller's)
        path: /                              # optional
        expect: allowed                      # allowed | denied | refused
      - certificate: productpage.sample@cluster3   # a Workload
        expect: refused                      # issued | refused

``outside`` is a plaintext client outside the mesh dialing the service's endpoint directly.
A workload reference needs ``@cluster`` only when its ``name.namespace`` runs in several
clusters (:mod:`meshsec.mesh.refs`). Services span clusters, so ``to`` names no cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.document import (
    DocumentReader,
    FieldPath,
    SourceDocument,
    parse_port_text,
    show_value,
    too_many_port_digits,
)
from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.mesh.refs import ClusterScoped, format_ref, parse_workload_ref, resolve_workload_ref
from meshsec.proxy.registry import split_service_host

EXPECTATIONS_KIND = "Expectations"
MESHSEC_API = "meshsec.io/v1alpha1"
OUTSIDE = "outside"
VERDICTS = ("allowed", "denied", "refused")
CERTIFICATE_VERDICTS = ("issued", "refused")
EXPECTATION_FIELDS = ("from", "to", "expect", "path", "certificate")
REQUEST = "request"
CERTIFICATE = "certificate"


@dataclass(frozen=True)
class Expectation:
    source: str  # as shown: "name.namespace", "name.namespace@cluster" or "outside"
    service: str  # request expectations: the target Service; "" for a certificate one
    namespace: str
    port: int
    expect: str
    path: str = "/"
    file: str = ""
    line: int = 0
    source_key: str = ""  # "name.namespace@cluster" of the workload ("" for outside)
    kind: str = REQUEST  # "request" | "certificate"

    @property
    def target(self) -> str:
        if self.kind == CERTIFICATE:
            return "(certificate)"
        return f"{self.service}.{self.namespace}:{self.port}"

    @property
    def host(self) -> str:
        return f"{self.service}.{self.namespace}.svc.cluster.local"


def workload_key(name: str, namespace: str, cluster: str) -> str:
    """The runtime's key of a workload: always qualified."""
    return format_ref(name, namespace, cluster, qualified=True)


def is_expectations_document(doc: SourceDocument) -> bool:
    data = doc.data
    return isinstance(data, dict) and data.get("kind") == EXPECTATIONS_KIND


def parse_expectations(
    doc: SourceDocument,
    snapshot: PolicySnapshot,
    workloads: Sequence[ClusterScoped],
    diags: list[Diagnostic],
) -> list[Expectation]:
    """The expectations of one document; problems go to ``diags`` (file, line, field)."""
    r = DocumentReader(doc, resource=f"{EXPECTATIONS_KIND} {doc.file}")
    body = r.mapping(doc.data, (), ("apiVersion", "kind", "metadata", "spec"), EXPECTATIONS_KIND)
    out: list[Expectation] = []
    if body is not None and body.get("apiVersion") != MESHSEC_API:
        r.report(
            dg.UNKNOWN_API_VERSION,
            f"apiVersion {body.get('apiVersion')!r} is not served for {EXPECTATIONS_KIND}; "
            f"use {MESHSEC_API}",
            ("apiVersion",),
        )
    spec = r.mapping((body or {}).get("spec"), ("spec",), ("expectations",), "spec") or {}
    qualified = len({w.cluster for w in workloads}) > 1
    items = r.sequence(spec.get("expectations"), ("spec", "expectations"), "expectations")
    for i, raw in enumerate(items):
        path: FieldPath = ("spec", "expectations", i)
        before = len(r.diagnostics)
        item = r.mapping(raw, path, EXPECTATION_FIELDS, "expectation")
        if item is None:
            continue
        if "certificate" in item:
            found = _certificate(r, item, path, workloads, qualified)
        else:
            found = _request(r, item, path, snapshot, workloads, qualified)
        if found is not None and not any(d.level is Level.ERROR for d in r.diagnostics[before:]):
            out.append(
                Expectation(
                    found.source,
                    found.service,
                    found.namespace,
                    found.port,
                    found.expect,
                    found.path,
                    doc.file,
                    doc.line_of(path),
                    found.source_key,
                    found.kind,
                )
            )
    diags.extend(r.diagnostics)
    return out


def _workload(
    r: DocumentReader,
    text: str,
    path: FieldPath,
    workloads: Sequence[ClusterScoped],
    qualified: bool,
) -> tuple[str, str, str] | None:
    """``(shown, key, namespace)`` of a workload reference, or None (reported)."""
    ref = parse_workload_ref(text)
    if isinstance(ref, str):
        r.report(dg.INVALID_VALUE, f"{path[-1]} {show_value(text)}: {ref}", path)
        return None
    if not ref.namespace:
        r.report(
            dg.INVALID_VALUE,
            f"{path[-1]} {text!r}: say the namespace (name.namespace[@cluster])",
            path,
        )
        return None
    found = resolve_workload_ref(ref, workloads)
    if isinstance(found, str):
        extra = f", or {OUTSIDE!r}" if path[-1] == "from" else ""
        r.report(dg.INVALID_VALUE, f"{path[-1]} {text!r}: {found}{extra}", path)
        return None
    shown = format_ref(found.name, found.namespace, found.cluster, qualified=qualified)
    return shown, workload_key(found.name, found.namespace, found.cluster), found.namespace


def _certificate(
    r: DocumentReader,
    item: dict[str, object],
    path: FieldPath,
    workloads: Sequence[ClusterScoped],
    qualified: bool,
) -> Expectation | None:
    for key in ("from", "to", "path"):
        if key in item:
            r.report(
                dg.INVALID_VALUE,
                f"{key!r} does not go with 'certificate' (a certificate expectation is "
                "{certificate: <workload>, expect: issued|refused})",
                (*path, key),
            )
    text = r.string(item.get("certificate"), (*path, "certificate"), required=True)
    expect = r.string(item.get("expect"), (*path, "expect"), required=True)
    if text is None or expect is None:
        return None
    if expect not in CERTIFICATE_VERDICTS:
        r.report(
            dg.INVALID_ENUM,
            f"invalid expect {expect!r} for a certificate; valid values: "
            f"{', '.join(CERTIFICATE_VERDICTS)}",
            (*path, "expect"),
        )
        return None
    found = _workload(r, text, (*path, "certificate"), workloads, qualified)
    if found is None:
        return None
    shown, key, _ = found
    return Expectation(shown, "", "", 0, expect, "/", source_key=key, kind=CERTIFICATE)


def _request(
    r: DocumentReader,
    item: dict[str, object],
    path: FieldPath,
    snapshot: PolicySnapshot,
    workloads: Sequence[ClusterScoped],
    qualified: bool,
) -> Expectation | None:
    source = r.string(item.get("from"), (*path, "from"), required=True)
    target = r.string(item.get("to"), (*path, "to"), required=True)
    expect = r.string(item.get("expect"), (*path, "expect"), required=True)
    req_path = r.string(item.get("path"), (*path, "path")) or "/"
    if source is None or target is None or expect is None:
        return None
    ok = True
    shown, key, client_ns = OUTSIDE, "", "default"
    if source != OUTSIDE:
        found = _workload(r, source, (*path, "from"), workloads, qualified)
        if found is None:
            ok = False
            parsed = parse_workload_ref(source)  # still read 'to' in the caller's namespace
            client_ns = parsed.namespace or client_ns if not isinstance(parsed, str) else client_ns
        else:
            shown, key, client_ns = found
    if expect not in VERDICTS:
        r.report(
            dg.INVALID_ENUM,
            f"invalid expect {expect!r}; valid values: {', '.join(VERDICTS)}",
            (*path, "expect"),
        )
        ok = False
    if not req_path.startswith("/"):
        r.report(dg.INVALID_VALUE, f"path {req_path!r} must start with /", (*path, "path"))
        ok = False
    host, sep, port_text = target.rpartition(":")
    if "@" in host:
        r.report(
            dg.INVALID_VALUE,
            f"to {show_value(target)}: a Service spans clusters (its endpoints are the selected "
            "workloads of every cluster); name no @cluster in 'to'",
            (*path, "to"),
        )
        return None
    split = split_service_host(host, client_ns) if sep else None
    port = parse_port_text(port_text)  # never int() of a long digit string: it raises
    if split is None or port is None:
        too_long = too_many_port_digits(port_text)
        r.report(
            dg.INVALID_VALUE,
            f"to {show_value(target)}: {too_long}"
            if too_long
            else f"to {show_value(target)}: expected service[.namespace]:port (port 1-65535)",
            (*path, "to"),
        )
        return None
    service_name, service_ns = split
    service = snapshot.service(service_ns, service_name)
    if service is None:
        r.report(
            dg.INVALID_VALUE,
            f"to {target!r}: no Service {service_ns}/{service_name} in the directory",
            (*path, "to"),
        )
        return None
    if not any(p.port == port for p in service.ports):
        ports = ", ".join(str(p.port) for p in service.ports)
        r.report(
            dg.INVALID_VALUE,
            f"to {target!r}: Service {service_ns}/{service_name} has no port {port} "
            f"(ports: {ports or 'none'})",
            (*path, "to"),
        )
        return None
    if not ok:
        return None
    return Expectation(shown, service_name, service_ns, port, expect, req_path, source_key=key)


__all__ = [
    "CERTIFICATE",
    "CERTIFICATE_VERDICTS",
    "EXPECTATIONS_KIND",
    "OUTSIDE",
    "REQUEST",
    "VERDICTS",
    "Expectation",
    "is_expectations_document",
    "parse_expectations",
    "workload_key",
]
