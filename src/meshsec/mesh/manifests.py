"""A mesh directory: manifests for ``meshsec up`` plus the scenario's expectations.

Everything the policy engine reads (Namespace, ServiceAccount, Service, PeerAuthentication,
DestinationRule, AuthorizationPolicy, the ``istio`` ConfigMap) and meshsec's ``Workload`` kind
(``meshsec.io/v1alpha1``: ``spec.serviceAccount``, ``spec.command`` argv, ``spec.env``,
``spec.ports`` with ``protocol: http|tcp``, ``spec.mountMtlsCerts``) are parsed by the policy
parser, with its diagnostics. On top, :func:`build_mesh_plan` checks what running the mesh needs
(every Workload has a command, its namespace and service account exist, ...) and parses the
``Expectations`` documents::

    apiVersion: meshsec.io/v1alpha1
    kind: Expectations
    metadata: {name: photo-sharing}
    spec:
      expectations:
      - from: photo-frontend.photo-ns        # a Workload (name.namespace), or "outside"
        to: photo-backend.photo-ns:8080      # service[.namespace]:port (namespace: the caller's)
        path: /                              # optional
        expect: allowed                      # allowed | denied | refused

``outside`` is a plaintext client outside the mesh dialing the service's endpoint directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshsec.config.sources.files import build_snapshot, read_files
from meshsec.config.sources.yaml_lines import parse_yaml_text
from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.document import (
    DocumentReader,
    SourceDocument,
    parse_port_text,
    show_value,
    too_many_port_digits,
)
from meshsec.core.policy.model import Workload
from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.mesh.registry import split_service_host

EXPECTATIONS_KIND = "Expectations"
MESHSEC_API = "meshsec.io/v1alpha1"
OUTSIDE = "outside"
VERDICTS = ("allowed", "denied", "refused")
EXPECTATION_FIELDS = ("from", "to", "expect", "path")


@dataclass(frozen=True)
class Expectation:
    source: str  # "name.namespace" or "outside"
    service: str
    namespace: str
    port: int
    expect: str
    path: str = "/"
    file: str = ""
    line: int = 0

    @property
    def target(self) -> str:
        return f"{self.service}.{self.namespace}:{self.port}"

    @property
    def host(self) -> str:
        return f"{self.service}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True)
class MeshPlan:
    """What ``meshsec up`` runs: the snapshot, the workloads to start, the expectations."""

    directory: Path
    snapshot: PolicySnapshot
    workloads: tuple[Workload, ...]
    expectations: tuple[Expectation, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.level is Level.ERROR)

    @property
    def namespaces(self) -> tuple[str, ...]:
        names = {w.namespace for w in self.workloads} | set(self.snapshot.namespace_names)
        return tuple(sorted(names))

    def workload(self, ref: str) -> Workload | None:
        name, _, namespace = ref.partition(".")
        return next(
            (w for w in self.workloads if w.name == name and w.namespace == namespace), None
        )


def load_mesh_plan(directory: Path) -> MeshPlan:
    """Read every manifest under ``directory`` (I/O) and build the plan."""
    contents, problems = read_files([directory])
    snapshot = build_snapshot(contents, problems)
    documents: list[SourceDocument] = []
    for item in contents:
        if item.data is None:
            continue
        try:
            text = item.data.decode("utf-8-sig")
        except UnicodeDecodeError:
            continue  # already a diagnostic of the snapshot
        documents.extend(parse_yaml_text(text, file=item.path).documents)
    return build_mesh_plan(directory, snapshot, documents)


def _is_expectations(doc: SourceDocument) -> bool:
    data = doc.data
    return isinstance(data, dict) and data.get("kind") == EXPECTATIONS_KIND


def build_mesh_plan(
    directory: Path, snapshot: PolicySnapshot, documents: Sequence[SourceDocument]
) -> MeshPlan:
    """Check the snapshot for running and parse the expectations (pure)."""
    diags: list[Diagnostic] = [
        d
        for d in snapshot.diagnostics
        if not (d.code == dg.UNKNOWN_KIND.code and EXPECTATIONS_KIND in d.message)
    ]
    workloads = tuple(w for w in snapshot.workloads if w.source_kind == "Workload")
    diags.extend(_check_workloads(snapshot, workloads))
    expectations: list[Expectation] = []
    for doc in documents:
        if _is_expectations(doc):
            expectations.extend(_parse_expectations(doc, snapshot, workloads, diags))
    return MeshPlan(
        directory, snapshot, workloads, tuple(expectations), tuple(dg.sort_diagnostics(diags))
    )


def _at(info: dg.CodeInfo, message: str, workload: Workload, path: str) -> Diagnostic:
    return dg.make(
        info,
        message,
        file=workload.origin.file,
        line=workload.origin.line_of(path),
        path=path,
        resource=workload.ref,
    )


def _check_workloads(
    snapshot: PolicySnapshot, workloads: Sequence[Workload]
) -> Iterable[Diagnostic]:
    if not workloads:
        yield dg.make(
            dg.MISSING_FIELD, "no meshsec.io/v1alpha1 Workload in the directory: nothing to run"
        )
    namespaces = set(snapshot.namespace_names)
    others = [w for w in snapshot.workloads if w.source_kind != "Workload"]
    for other in others:
        yield dg.make(
            dg.UNKNOWN_KIND,
            f"{other.ref} is read for policy analysis only; meshsec up runs meshsec.io/v1alpha1 "
            "Workload objects (they carry the command)",
            file=other.origin.file,
            line=other.origin.line,
            resource=other.ref,
            level=Level.INFO,
        )
    for w in workloads:
        if not w.command:
            yield _at(
                dg.MISSING_FIELD,
                "spec.command is required: the argv list that runs the application "
                "(e.g. [python, app.py]; 'python' means the Python running meshsec)",
                w,
                "spec.command",
            )
        if w.namespace not in namespaces:
            yield _at(
                dg.INVALID_VALUE,
                f"namespace {w.namespace!r} has no Namespace object in the directory; add one "
                "(kubectl would refuse the pod too)",
                w,
                "metadata.namespace",
            )
        accounts = {sa.name for sa in snapshot.service_accounts_in(w.namespace)}
        if w.service_account not in accounts:
            yield _at(
                dg.INVALID_VALUE,
                f"service account {w.namespace}/{w.service_account} has no ServiceAccount object; "
                "the workload's identity would be spiffe://.../sa/"
                f"{w.service_account} — add the ServiceAccount",
                w,
                "spec.serviceAccount",
            )
        for key in w.env:
            if (
                not key
                or not (key[0].isalpha() or key[0] == "_")
                or not all(c.isalnum() or c == "_" for c in key)
            ):
                yield _at(
                    dg.INVALID_VALUE,
                    f"env var name {key!r} is not a valid name ([A-Za-z_][A-Za-z0-9_]*)",
                    w,
                    f"spec.env.{key}",
                )
    seen: dict[str, Workload] = {}
    for w in workloads:
        key = f"{w.name}.{w.namespace}"
        if key in seen:
            yield _at(
                dg.DUPLICATE_RESOURCE,
                f"Workload {w.namespace}/{w.name} is defined twice",
                w,
                "metadata.name",
            )
        seen[key] = w


def _parse_expectations(
    doc: SourceDocument,
    snapshot: PolicySnapshot,
    workloads: Sequence[Workload],
    diags: list[Diagnostic],
) -> list[Expectation]:
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
    names = {f"{w.name}.{w.namespace}" for w in workloads}
    items = r.sequence(spec.get("expectations"), ("spec", "expectations"), "expectations")
    for i, raw in enumerate(items):
        path = ("spec", "expectations", i)
        before = len(r.diagnostics)
        item = r.mapping(raw, path, EXPECTATION_FIELDS, "expectation")
        if item is None:
            continue
        source = r.string(item.get("from"), (*path, "from"), required=True)
        target = r.string(item.get("to"), (*path, "to"), required=True)
        expect = r.string(item.get("expect"), (*path, "expect"), required=True)
        req_path = r.string(item.get("path"), (*path, "path")) or "/"
        if source is None or target is None or expect is None:
            continue
        ok = True
        if source != OUTSIDE and source not in names:
            r.report(
                dg.INVALID_VALUE,
                f"from {source!r}: no Workload by that name.namespace; known: "
                f"{', '.join(sorted(names)) or '(none)'}, or {OUTSIDE!r}",
                (*path, "from"),
            )
            ok = False
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
        client_ns = source.partition(".")[2] if source != OUTSIDE else "default"
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
            continue
        service_name, service_ns = split
        service = snapshot.service(service_ns, service_name)
        if service is None:
            r.report(
                dg.INVALID_VALUE,
                f"to {target!r}: no Service {service_ns}/{service_name} in the directory",
                (*path, "to"),
            )
            continue
        if not any(p.port == port for p in service.ports):
            ports = ", ".join(str(p.port) for p in service.ports)
            r.report(
                dg.INVALID_VALUE,
                f"to {target!r}: Service {service_ns}/{service_name} has no port {port} "
                f"(ports: {ports or 'none'})",
                (*path, "to"),
            )
            continue
        if ok and not any(d.level is Level.ERROR for d in r.diagnostics[before:]):
            out.append(
                Expectation(
                    source,
                    service_name,
                    service_ns,
                    port,
                    expect,
                    req_path,
                    doc.file,
                    doc.line_of(path),
                )
            )
    diags.extend(r.diagnostics)
    return out


__all__ = [
    "OUTSIDE",
    "VERDICTS",
    "Expectation",
    "MeshPlan",
    "build_mesh_plan",
    "load_mesh_plan",
]
