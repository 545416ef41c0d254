"""Turn loaded YAML documents into a :class:`PolicySnapshot` plus coded diagnostics. Pure.

Input: :class:`~meshsec.core.policy.document.SourceDocument` values in input order (the files
source sorts files by path and keeps documents in file order). Output: every valid object,
plus a diagnostic for everything wrong, each with file, line and field path.

Rules (decided here, documented in docs/cli.md):

* **Strict, like the API server with ``kubectl --validate=strict``**: a resource with any
  error-level diagnostic is *not loaded* (the cluster would reject it); warnings keep it. One bad
  document never affects the others, in the same file or elsewhere.
* Kinds: ``PeerAuthentication``/``AuthorizationPolicy`` (``security.istio.io/v1``, ``v1beta1``),
  ``DestinationRule`` (``networking.istio.io/v1``, ``v1beta1``, ``v1alpha3``), ``Namespace``,
  ``ServiceAccount``, ``Service``, ``Pod`` and pod templates of ``apps/v1`` controllers and
  ``batch/v1`` Jobs (workloads), meshsec's ``Workload`` (``meshsec.io/v1alpha1``) and the
  ``istio`` ConfigMap in ``istio-system`` (mesh config in ``data.mesh``). ``kind: List`` (and
  ``<Kind>List``) documents are expanded. Other kinds are skipped with an INFO diagnostic;
  removed Istio kinds (``MeshPolicy``, ``authentication.istio.io`` ``Policy``, ``rbac.istio.io``)
  are errors that say what to use instead.
* A namespaced object without ``metadata.namespace`` goes to ``default`` (what ``kubectl
  apply`` without ``-n`` does).
* ``metadata.creationTimestamp`` is kept when given; ordering ties are broken by input order
  (``Origin.order``), see :attr:`model.Resource.precedence_key`.
* The same kind/namespace/name twice: the first is kept, the later ones are errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.core.policy.document import (
    DocumentReader,
    FieldPath,
    SourceDocument,
    YamlTextParser,
    check_dns1123_label,
    check_dns1123_subdomain,
    describe_type,
    format_path,
)
from meshsec.core.policy.model import (
    AuthorizationPolicy,
    DestinationRule,
    FrozenMap,
    MeshConfig,
    Namespace,
    ObjectMeta,
    Origin,
    PeerAuthentication,
    Resource,
    Service,
    ServiceAccount,
    Workload,
)
from meshsec.core.policy.parse_networking import DR_SPEC_FIELDS, parse_destination_rule
from meshsec.core.policy.parse_registry import (
    CONTROLLER_KINDS,
    MESH_CONFIG_NAME,
    MESH_CONFIG_NAMESPACE,
    WORKLOAD_SPEC_FIELDS,
    parse_mesh_config,
    parse_meshsec_workload,
    parse_pod_like,
    parse_service,
)
from meshsec.core.policy.parse_security import (
    AP_SPEC_FIELDS,
    PA_SPEC_FIELDS,
    parse_authorization_policy,
    parse_peer_authentication,
)
from meshsec.core.policy.snapshot import PolicySnapshot

DEFAULT_NAMESPACE = "default"
SECURITY_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")
NETWORKING_VERSIONS = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)
MESHSEC_VERSIONS = ("meshsec.io/v1alpha1",)
API_VERSIONS: Mapping[str, tuple[str, ...]] = {
    "PeerAuthentication": SECURITY_VERSIONS,
    "AuthorizationPolicy": SECURITY_VERSIONS,
    "DestinationRule": NETWORKING_VERSIONS,
    "Workload": MESHSEC_VERSIONS,
}
"""Kinds whose apiVersion is checked: another apiVersion is an error, not a different kind."""

CORE_KINDS: Mapping[str, str] = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "Service": "v1",
    "Pod": "v1",
    "ConfigMap": "v1",
    **{k: "apps/v1" for k in CONTROLLER_KINDS if k != "Job"},
    "Job": "batch/v1",
}
TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
META_FIELDS = (
    "name",
    "namespace",
    "labels",
    "annotations",
    "creationTimestamp",
    "uid",
    "resourceVersion",
    "generation",
    "selfLink",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
T = TypeVar("T")
CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "MeshPolicy", "ClusterRbacConfig"})
_RBAC_KINDS = ("ServiceRole", "ServiceRoleBinding", "RbacConfig", "ClusterRbacConfig")


@dataclass
class _Collected:
    resources: list[Resource] = field(default_factory=list)
    mesh_configs: list[MeshConfig] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    order: int = 0


def parse_documents(
    documents: Iterable[SourceDocument],
    *,
    version: str = "",
    yaml_parser: YamlTextParser | None = None,
    diagnostics: Iterable[Diagnostic] = (),
) -> PolicySnapshot:
    """Parse every document (in input order) into one immutable snapshot.

    ``diagnostics`` are prepended (the loader's: unreadable files, YAML syntax errors);
    ``yaml_parser`` reads YAML embedded in resources (the mesh config).
    """
    out = _Collected(diagnostics=list(diagnostics))
    for doc in documents:
        _parse_any(doc, out, yaml_parser)
    out.diagnostics = _merge_skipped(out.diagnostics)
    resources = _drop_duplicates(out)
    mesh = _pick_mesh_config(out)
    return PolicySnapshot(
        version=version,
        peer_authentications=_only(resources, PeerAuthentication),
        destination_rules=_only(resources, DestinationRule),
        authorization_policies=_only(resources, AuthorizationPolicy),
        namespaces=_only(resources, Namespace),
        service_accounts=_only(resources, ServiceAccount),
        services=_only(resources, Service),
        workloads=_only(resources, Workload),
        mesh_config=mesh,
        diagnostics=tuple(out.diagnostics),
    )


def _only(resources: list[Resource], cls: type[T]) -> tuple[T, ...]:
    return tuple(r for r in resources if isinstance(r, cls))


def _parse_any(doc: SourceDocument, out: _Collected, yaml_parser: YamlTextParser | None) -> None:
    if doc.data is None:  # an empty document (e.g. a trailing '---')
        out.diagnostics.extend(doc.load_errors)
        return
    r = DocumentReader(doc)
    body = r.mapping(doc.data, (), None, "Kubernetes object")
    if body is None:
        out.diagnostics.append(_not_a_mapping(doc))
        out.diagnostics.extend(doc.load_errors)
        return
    kind, api = body.get("kind"), body.get("apiVersion")
    if isinstance(kind, str) and kind.endswith("List") and "items" in body:
        items = r.sequence(body.get("items"), ("items",), "items")
        out.diagnostics.extend(r.diagnostics)
        head = format_path((*doc.display_prefix, "items")) + "["
        out.diagnostics.extend(d for d in doc.load_errors if not d.path.startswith(head))
        for child in doc.children("items", items):
            _parse_any(child, out, yaml_parser)
        return
    out.order += 1
    origin = Origin(doc.file, doc.line_of(()), doc.index, out.order, _field_lines(doc))
    resource = _parse_object(r, body, kind, api, origin, out, yaml_parser)
    r.diagnostics.extend(replace(d, resource=r.resource) for d in doc.load_errors)
    out.diagnostics.extend(r.diagnostics)
    if resource is not None and not r.has_errors:
        out.resources.append(resource)


def _merge_skipped(diags: list[Diagnostic]) -> list[Diagnostic]:
    """One MS0004 per skipped kind (at its first object, with a count), so a whole
    ``kubectl get all -o yaml`` dump does not drown the real findings."""
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    merged: list[Diagnostic] = []
    for diag in diags:
        if diag.code != dg.UNKNOWN_KIND.code:
            merged.append(diag)
            continue
        key = diag.message
        counts[key] = counts.get(key, 0) + 1
        if key not in first:
            first[key] = len(merged)
            merged.append(diag)
    for key, index in first.items():
        if counts[key] > 1:
            diag = merged[index]
            merged[index] = replace(
                diag,
                message=f"{diag.message} ({counts[key]} objects like this; the first is shown)",
            )
    return merged


def _field_lines(doc: SourceDocument) -> FrozenMap[str, int]:
    return FrozenMap((format_path(path), line) for path, line in doc.lines.items() if path)


def _not_a_mapping(doc: SourceDocument) -> Diagnostic:
    return dg.make(
        dg.NOT_A_MAPPING,
        f"document {doc.index} is a {describe_type(doc.data)}, not a Kubernetes object "
        "(a mapping with apiVersion, kind, metadata)",
        file=doc.file,
        line=doc.line_of(()),
        path="",
    )


def _parse_object(
    r: DocumentReader,
    body: Mapping[str, object],
    kind: object,
    api: object,
    origin: Origin,
    out: _Collected,
    yaml_parser: YamlTextParser | None,
) -> Resource | None:
    if not isinstance(kind, str) or not kind or not isinstance(api, str) or not api:
        missing = [
            n for n, v in (("apiVersion", api), ("kind", kind)) if not isinstance(v, str) or not v
        ]
        r.report(
            dg.MISSING_TYPE,
            f"{' and '.join(missing)} missing or not a string; every Kubernetes object needs "
            "apiVersion and kind",
            (),
        )
        return None
    raw_meta = body.get("metadata")
    name, namespace = _peek_name(raw_meta, kind)
    r.resource = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    if _removed(r, kind, api, body, namespace):
        return None
    if kind in API_VERSIONS:
        if api not in API_VERSIONS[kind]:
            r.report(
                dg.UNKNOWN_API_VERSION,
                f"apiVersion {api!r} is not served for {kind}; use one of "
                f"{', '.join(API_VERSIONS[kind])}",
                ("apiVersion",),
            )
            return None
    elif CORE_KINDS.get(kind) != api:
        r.report(
            dg.UNKNOWN_KIND,
            f"{api} {kind} is not used by meshsec's policy analysis; skipped",
            ("kind",),
        )
        return None
    if kind == "ConfigMap":
        if (name, namespace) != (MESH_CONFIG_NAME, MESH_CONFIG_NAMESPACE):
            r.report(dg.UNKNOWN_KIND, "only the istio ConfigMap in istio-system is read", ("kind",))
            return None
        meta = _meta(r, raw_meta, kind)
        mesh = parse_mesh_config(r, body, origin, yaml_parser) if meta else None
        if mesh is not None and not r.has_errors:
            out.mesh_configs.append(mesh)
        return None
    istio_like = kind in API_VERSIONS
    if istio_like:
        r.mapping(body, (), TOP_LEVEL_FIELDS, kind)
    meta = _meta(r, raw_meta, kind)
    if meta is None:
        return None
    if kind in CONTROLLER_KINDS or kind == "Pod":
        return parse_pod_like(r, kind, body, meta, origin)
    if kind in ("Namespace", "ServiceAccount"):
        cls = Namespace if kind == "Namespace" else ServiceAccount
        return cls(meta=meta, origin=origin)
    spec_fields: tuple[str, ...] | None = {
        "PeerAuthentication": PA_SPEC_FIELDS,
        "AuthorizationPolicy": AP_SPEC_FIELDS,
        "DestinationRule": DR_SPEC_FIELDS,
        "Workload": WORKLOAD_SPEC_FIELDS,
    }.get(kind)
    spec = r.mapping(body.get("spec"), ("spec",), spec_fields, f"{kind} spec")
    if spec is None:
        return None
    if kind == "Service":
        return parse_service(r, spec, meta, origin)
    parsers: Mapping[str, Callable[..., Resource]] = {
        "PeerAuthentication": parse_peer_authentication,
        "AuthorizationPolicy": parse_authorization_policy,
        "DestinationRule": parse_destination_rule,
    }
    if kind == "Workload":
        return parse_meshsec_workload(r, spec, meta, origin)
    return parsers[kind](r, spec, meta, origin, api)


def _peek_name(raw_meta: object, kind: str) -> tuple[str, str]:
    """Name and namespace for labelling diagnostics, before metadata is validated."""
    if not isinstance(raw_meta, Mapping):
        return "?", "" if kind in CLUSTER_SCOPED_KINDS else DEFAULT_NAMESPACE
    name = raw_meta.get("name")
    namespace = raw_meta.get("namespace")
    shown_name = name if isinstance(name, str) and name else "?"
    if kind in CLUSTER_SCOPED_KINDS:
        return shown_name, ""
    return shown_name, namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE


def _meta(r: DocumentReader, raw: object, kind: str) -> ObjectMeta | None:
    path: FieldPath = ("metadata",)
    if raw is None:
        r.report(dg.MISSING_FIELD, "metadata.name is required", ())
        return None
    body = r.mapping(raw, path, META_FIELDS, "metadata")
    if body is None:
        return None
    name = r.string(body.get("name"), (*path, "name"), required=True)
    if name is None:
        return None
    check = check_dns1123_label if kind == "Namespace" else check_dns1123_subdomain
    why = check(name)
    if why:
        r.report(dg.INVALID_NAME, f"metadata.name {name!r}: {why}", (*path, "name"))
        return None
    namespace = ""
    if kind != "Namespace":
        given = r.string(body.get("namespace"), (*path, "namespace"))
        namespace = given or DEFAULT_NAMESPACE
        if not given and kind in API_VERSIONS:
            r.report(
                dg.NAMESPACE_DEFAULTED,
                f"metadata.namespace is not set, so this {kind} is read as in namespace "
                f"{DEFAULT_NAMESPACE!r} (what kubectl apply without -n does); a mesh-wide policy "
                "belongs in the root namespace (istio-system by default)",
                path,
            )
        why = check_dns1123_label(namespace)
        if why:
            r.report(
                dg.INVALID_NAME, f"metadata.namespace {namespace!r}: {why}", (*path, "namespace")
            )
            return None
    labels = r.string_map(body.get("labels"), (*path, "labels"), "metadata.labels", labels=True)
    annotations = r.string_map(
        body.get("annotations"), (*path, "annotations"), "metadata.annotations", labels=False
    )
    created = r.timestamp(body.get("creationTimestamp"), (*path, "creationTimestamp"))
    return ObjectMeta(name, namespace, created, labels, annotations)


# --------------------------------------------------------------------------- removed APIs


def _v1alpha1_mode(body: Mapping[str, object]) -> str:
    """The PeerAuthentication mode equivalent to a v1alpha1 ``peers`` list."""
    spec = body.get("spec")
    peers = spec.get("peers") if isinstance(spec, Mapping) else None
    if not isinstance(peers, list) or not peers:
        return "PERMISSIVE"  # no peer authentication required: plaintext still accepted
    for peer in peers:
        mtls = peer.get("mtls") if isinstance(peer, Mapping) else None
        if isinstance(mtls, Mapping) and mtls.get("mode") in ("STRICT", "PERMISSIVE"):
            return str(mtls["mode"])
    return "STRICT"  # v1alpha1 `mtls: {}` meant STRICT


def _removed(
    r: DocumentReader, kind: str, api: str, body: Mapping[str, object], namespace: str
) -> bool:
    group = api.split("/", 1)[0]
    if kind == "MeshPolicy":
        mode = _v1alpha1_mode(body)
        served = "" if api == "authentication.istio.io/v1alpha1" else f" ({api} never had it)"
        r.report(
            dg.REMOVED_KIND,
            f"MeshPolicy{served} was an authentication.istio.io/v1alpha1 kind, removed in Istio "
            "1.6, and is not applied. For mesh-wide mTLS use a PeerAuthentication without a "
            "selector in the root namespace (meshConfig.rootNamespace, istio-system by default): "
            "apiVersion: security.istio.io/v1, kind: PeerAuthentication, metadata: "
            f"{{name: default, namespace: istio-system}}, spec: {{mtls: {{mode: {mode}}}}}. "
            "PeerAuthentication has only mtls.mode: certificates always come from the mesh CA "
            "(fields such as peers[].mtls.credentialName have no equivalent)",
            ("kind",),
        )
        return True
    if group == "authentication.istio.io":
        ns = namespace or DEFAULT_NAMESPACE
        r.report(
            dg.REMOVED_KIND,
            f"{api} {kind} was removed in Istio 1.6 and is not applied. Peer authentication "
            "(spec.peers) becomes a PeerAuthentication (apiVersion: security.istio.io/v1) in "
            f"namespace {ns!r} with spec.mtls.mode: {_v1alpha1_mode(body)} (add "
            "spec.selector.matchLabels with the pod labels to target workloads: Policy's "
            "'targets' named Services, PeerAuthentication selects pods); JWT authentication "
            "(spec.origins) becomes a RequestAuthentication (security.istio.io/v1) plus an "
            "AuthorizationPolicy requiring requestPrincipals",
            ("kind",),
        )
        return True
    if group == "rbac.istio.io" or (kind in _RBAC_KINDS and group.endswith("istio.io")):
        r.report(
            dg.REMOVED_KIND,
            f"{api} {kind} (Istio RBAC v1alpha1) was removed in Istio 1.6 and is not applied; use "
            "AuthorizationPolicy (apiVersion: security.istio.io/v1): a ServiceRole's rules "
            "become spec.rules[].to.operation and a ServiceRoleBinding's subjects become "
            "spec.rules[].from.source, with spec.selector picking the workloads",
            ("kind",),
        )
        return True
    return False


# --------------------------------------------------------------------------- post-processing


def _identity(resource: Resource) -> tuple[str, str, str]:
    kind = resource.KIND
    if isinstance(resource, Workload):  # one name may run in several clusters (meshsec up)
        kind = f"{resource.source_kind}@{resource.cluster}"
    return (kind, resource.meta.namespace, resource.meta.name)


def _drop_duplicates(out: _Collected) -> list[Resource]:
    first: dict[tuple[str, str, str], Resource] = {}
    kept: list[Resource] = []
    for resource in out.resources:
        key = _identity(resource)
        if key in first:
            earlier = first[key]
            out.diagnostics.append(
                dg.make(
                    dg.DUPLICATE_RESOURCE,
                    f"{resource.ref} is defined again; the first definition at "
                    f"{earlier.origin} is used and this one is ignored",
                    file=resource.origin.file,
                    line=resource.origin.line,
                    resource=resource.ref,
                )
            )
            continue
        first[key] = resource
        kept.append(resource)
    return kept


def _pick_mesh_config(out: _Collected) -> MeshConfig:
    if not out.mesh_configs:
        return MeshConfig()
    chosen = out.mesh_configs[0]
    for extra in out.mesh_configs[1:]:
        where = extra.origin or Origin()
        out.diagnostics.append(
            dg.make(
                dg.DUPLICATE_RESOURCE,
                f"ConfigMap istio-system/istio is defined again; the first definition at "
                f"{chosen.origin} is used",
                file=where.file,
                line=where.line,
                resource="ConfigMap istio-system/istio",
            )
        )
    return chosen
