"""Parse the Kubernetes kinds meshsec reads for context: Service, workloads, mesh config.

Only the fields meshsec uses are read and checked (a Service's selector and ports, a pod's
labels, service account and container ports, the mesh config's trust domain settings); the rest
of these large core schemas is accepted as-is.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshsec.core.identity import InvalidTrustDomain, TrustDomain
from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.document import (
    DocumentReader,
    FieldPath,
    SourceDocument,
    YamlTextParser,
    check_dns1123_label,
    format_path,
    is_decimal,
)
from meshsec.core.policy.model import (
    FrozenMap,
    MeshConfig,
    ObjectMeta,
    Origin,
    Service,
    ServicePort,
    Workload,
    WorkloadPort,
)

SERVICE_PORT_FIELDS = ("name", "port", "targetPort", "protocol", "appProtocol", "nodePort")
SERVICE_PROTOCOLS = ("TCP", "UDP", "SCTP")
WORKLOAD_SPEC_FIELDS = ("serviceAccount", "ports", "command", "env", "mountMtlsCerts", "cluster")
WORKLOAD_PORT_FIELDS = ("port", "protocol", "name")
WORKLOAD_PROTOCOLS = ("http", "tcp")
ENV_VAR_FIELDS = ("name", "value")
CONTROLLER_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
MESH_CONFIG_NAME = "istio"
MESH_CONFIG_NAMESPACE = "istio-system"


def parse_service(
    r: DocumentReader, spec: Mapping[str, object], meta: ObjectMeta, origin: Origin
) -> Service:
    selector: FrozenMap[str, str] | None = None
    if spec.get("selector") is not None:
        selector = r.string_map(
            spec.get("selector"), ("spec", "selector"), "Service selector", labels=True
        )
    ports: list[ServicePort] = []
    for i, raw in enumerate(r.sequence(spec.get("ports"), ("spec", "ports"), "ports")):
        path: FieldPath = ("spec", "ports", i)
        body = r.mapping(raw, path, SERVICE_PORT_FIELDS, "ServicePort")
        if body is None:
            continue
        if body.get("port") is None:
            r.report(dg.MISSING_FIELD, "ports[].port is required", path)
            continue
        port = r.port(body["port"], (*path, "port"))
        name = r.string(body.get("name"), (*path, "name"))
        target = _target_port(r, body.get("targetPort"), (*path, "targetPort"))
        protocol = r.string(body.get("protocol"), (*path, "protocol")) or "TCP"
        if protocol not in SERVICE_PROTOCOLS:
            r.report(
                dg.INVALID_ENUM,
                f"invalid protocol {protocol!r}; valid values: {', '.join(SERVICE_PROTOCOLS)}",
                (*path, "protocol"),
            )
        app_protocol = r.string(body.get("appProtocol"), (*path, "appProtocol"))
        if port is not None:
            ports.append(ServicePort(port, name, target, protocol, app_protocol))
    return Service(meta=meta, origin=origin, selector=selector, ports=tuple(ports))


def _target_port(r: DocumentReader, value: object, path: FieldPath) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, str) and not is_decimal(value):
        why = check_dns1123_label(value) if len(value) <= 15 else "longer than 15 characters"
        if why:
            r.report(dg.INVALID_VALUE, f"named targetPort {value!r}: {why}", path)
            return None
        return value
    return r.port(value, path, "targetPort")


def _container_ports(
    r: DocumentReader, pod_spec: Mapping[str, object], path: FieldPath
) -> tuple[int, ...]:
    ports: list[int] = []
    containers = r.sequence(pod_spec.get("containers"), (*path, "containers"), "containers")
    for i, container in enumerate(containers):
        if not isinstance(container, Mapping):
            continue
        cpath: FieldPath = (*path, "containers", i, "ports")
        for j, raw in enumerate(r.sequence(container.get("ports"), cpath, "ports")):
            if isinstance(raw, Mapping) and raw.get("containerPort") is not None:
                port = r.port(raw["containerPort"], (*cpath, j, "containerPort"), "containerPort")
                if port is not None:
                    ports.append(port)
    return tuple(ports)


def parse_pod_like(
    r: DocumentReader, kind: str, body: Mapping[str, object], meta: ObjectMeta, origin: Origin
) -> Workload | None:
    """A Pod, or a controller's pod template (labels from ``spec.template.metadata``)."""
    spec = r.mapping(body.get("spec"), ("spec",), None, f"{kind} spec") or {}
    if kind == "Pod":
        labels = meta.labels
        pod_spec: Mapping[str, object] = spec
        spec_path: FieldPath = ("spec",)
    else:
        template = r.mapping(spec.get("template"), ("spec", "template"), None, "pod template")
        if not template:
            return None
        tmeta = r.mapping(
            template.get("metadata"), ("spec", "template", "metadata"), None, "metadata"
        )
        labels = r.string_map(
            (tmeta or {}).get("labels"),
            ("spec", "template", "metadata", "labels"),
            "pod template labels",
            labels=True,
        )
        spec_path = ("spec", "template", "spec")
        pod_spec = r.mapping(template.get("spec"), spec_path, None, "pod spec") or {}
    account = r.string(pod_spec.get("serviceAccountName"), (*spec_path, "serviceAccountName"))
    if account is None:  # the deprecated alias
        account = r.string(pod_spec.get("serviceAccount"), (*spec_path, "serviceAccount"))
    return Workload(
        meta=meta,
        origin=origin,
        labels=labels,
        service_account=account or "default",
        ports=_container_ports(r, pod_spec, spec_path),
        source_kind=kind,
    )


def parse_meshsec_workload(
    r: DocumentReader, spec: Mapping[str, object], meta: ObjectMeta, origin: Origin
) -> Workload:
    """meshsec's ``Workload`` kind: labels in metadata; ``spec.serviceAccount``; ``spec.ports``
    (a number, or ``{port, protocol: http|tcp, name}``; a bare number is ``tcp``);
    ``spec.command`` (argv list, what ``meshsec up`` runs); ``spec.env`` (name → value, or a
    Kubernetes ``[{name, value}]`` list); ``spec.mountMtlsCerts`` (the mounted-secret model);
    ``spec.cluster`` (a DNS-1123 label: the ``kind: Cluster`` it runs in, checked by
    ``meshsec up``)."""
    account = r.string(spec.get("serviceAccount"), ("spec", "serviceAccount")) or "default"
    specs: list[WorkloadPort] = []
    for i, raw in enumerate(r.sequence(spec.get("ports"), ("spec", "ports"), "ports")):
        parsed = _workload_port(r, raw, ("spec", "ports", i))
        if parsed is None:
            continue
        if any(p.port == parsed.port for p in specs):
            r.report(dg.INVALID_VALUE, f"port {parsed.port} is listed twice", ("spec", "ports", i))
            continue
        specs.append(parsed)
    command = r.strings(spec.get("command"), ("spec", "command"))
    mount = r.boolean(spec.get("mountMtlsCerts"), ("spec", "mountMtlsCerts"))
    cluster = r.string(spec.get("cluster"), ("spec", "cluster")) or ""
    problem = check_dns1123_label(cluster) if cluster else None
    if problem:
        r.report(dg.INVALID_VALUE, f"cluster {cluster!r}: {problem}", ("spec", "cluster"))
        cluster = ""
    return Workload(
        meta=meta,
        origin=origin,
        labels=meta.labels,
        service_account=account,
        ports=tuple(p.port for p in specs),
        source_kind="Workload",
        command=command,
        env=_workload_env(r, spec.get("env"), ("spec", "env")),
        port_specs=tuple(specs),
        mount_mtls_certs=bool(mount),
        cluster=cluster,
    )


def _workload_port(r: DocumentReader, raw: object, path: FieldPath) -> WorkloadPort | None:
    if not isinstance(raw, Mapping):
        port = r.port(raw, path)
        return WorkloadPort(port) if port is not None else None
    body = r.mapping(raw, path, WORKLOAD_PORT_FIELDS, "Workload port")
    if body is None:
        return None
    if body.get("port") is None:
        r.report(dg.MISSING_FIELD, "ports[].port is required", path)
        return None
    port = r.port(body["port"], (*path, "port"))
    protocol = r.string(body.get("protocol"), (*path, "protocol")) or "tcp"
    name = r.string(body.get("name"), (*path, "name")) or ""
    if protocol.lower() not in WORKLOAD_PROTOCOLS:
        r.report(
            dg.INVALID_ENUM,
            f"invalid protocol {protocol!r}; valid values: {', '.join(WORKLOAD_PROTOCOLS)}",
            (*path, "protocol"),
        )
        return None
    if port is None:
        return None
    return WorkloadPort(port, protocol.lower(), name)


def _workload_env(r: DocumentReader, raw: object, path: FieldPath) -> FrozenMap[str, str]:
    if isinstance(raw, list | tuple):
        out: dict[str, str] = {}
        for i, item in enumerate(raw):
            body = r.mapping(item, (*path, i), ENV_VAR_FIELDS, "env var")
            if body is None:
                continue
            name = r.string(body.get("name"), (*path, i, "name"), required=True)
            value = r.string(body.get("value"), (*path, i, "value"))
            if name is not None:
                out[name] = value or ""
        return FrozenMap(out)
    return r.string_map(raw, path, "Workload env", labels=False)


def parse_mesh_config(
    r: DocumentReader,
    body: Mapping[str, object],
    origin: Origin,
    yaml_parser: YamlTextParser | None,
) -> MeshConfig | None:
    """The ``mesh`` key of the ``istio`` ConfigMap: trust domain, aliases, root namespace,
    auto mTLS. Other mesh settings are accepted without checks."""
    data = r.mapping(body.get("data"), ("data",), None, "ConfigMap data") or {}
    text = r.string(data.get("mesh"), ("data", "mesh"))
    if not text:
        return MeshConfig(origin=origin)
    if yaml_parser is None:
        return None
    key_line = r.doc.line_of(("data", "mesh"))
    loaded = yaml_parser(text, file=r.doc.file, first_line=key_line + 1)
    for diag in loaded.diagnostics:
        r.diagnostics.append(
            dg.make(
                dg.INVALID_MESH_CONFIG,
                f"data.mesh is not valid YAML: {diag.message}",
                file=diag.file,
                line=diag.line,
                path="data.mesh",
                resource=r.resource,
            )
        )
    if not loaded.documents:
        return MeshConfig(origin=origin) if not loaded.diagnostics else None
    mesh_doc = loaded.documents[0]
    mr = DocumentReader(
        SourceDocument(
            mesh_doc.file,
            mesh_doc.index,
            mesh_doc.data,
            mesh_doc.line,
            mesh_doc.lines,
            display_prefix=("data", "mesh"),
        ),
        r.resource,
    )
    mesh = mr.mapping(mesh_doc.data, (), None, "mesh config")
    if mesh is None:
        r.diagnostics.extend(mr.diagnostics)
        return None
    trust_domain = mr.string(mesh.get("trustDomain"), ("trustDomain",)) or "cluster.local"
    _check_trust_domain(mr, trust_domain, ("trustDomain",))
    aliases = mr.strings(mesh.get("trustDomainAliases"), ("trustDomainAliases",))
    for i, alias in enumerate(aliases):
        _check_trust_domain(mr, alias, ("trustDomainAliases", i))
    root = mr.string(mesh.get("rootNamespace"), ("rootNamespace",)) or "istio-system"
    why = check_dns1123_label(root)
    if why:
        mr.report(dg.INVALID_MESH_CONFIG, f"rootNamespace {root!r}: {why}", ("rootNamespace",))
    auto = mr.boolean(mesh.get("enableAutoMtls"), ("enableAutoMtls",))
    r.diagnostics.extend(mr.diagnostics)
    return MeshConfig(
        trust_domain=trust_domain,
        trust_domain_aliases=aliases,
        root_namespace=root,
        enable_auto_mtls=True if auto is None else auto,
        origin=origin,
    )


def _check_trust_domain(r: DocumentReader, value: str, path: FieldPath) -> None:
    try:
        TrustDomain(value)
    except InvalidTrustDomain as exc:
        r.report(dg.INVALID_MESH_CONFIG, f"{format_path(path)}: {exc}", path)
