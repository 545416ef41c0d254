"""Parse the ``spec`` of a ``networking.istio.io`` DestinationRule.

The TLS-relevant parts (``trafficPolicy.tls``, ``portLevelSettings``, ``subsets``,
``workloadSelector``, ``exportTo``) are modelled; the other traffic settings (load balancer,
connection pool, outlier detection, tunnel, proxy protocol, retry budget) are checked for
unknown field names one level deep and otherwise accepted as-is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.document import DocumentReader, FieldPath, check_dns1123_label
from meshsec.core.policy.model import (
    ClientTLSSettings,
    DestinationRule,
    ObjectMeta,
    Origin,
    PortSelector,
    PortTrafficPolicy,
    Subset,
    TlsMode,
    TrafficPolicy,
)
from meshsec.core.policy.parse_security import parse_selector

_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
_HOST = re.compile(rf"\*|(\*\.)?{_LABEL}(\.{_LABEL})*")
DR_SPEC_FIELDS = ("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector")
TRAFFIC_POLICY_FIELDS = (
    "loadBalancer",
    "connectionPool",
    "outlierDetection",
    "tls",
    "portLevelSettings",
    "tunnel",
    "proxyProtocol",
    "retryBudget",
)
PORT_TRAFFIC_POLICY_FIELDS = ("port", "loadBalancer", "connectionPool", "outlierDetection", "tls")
SUBSET_FIELDS = ("name", "labels", "trafficPolicy")
TLS_FIELDS = {
    "mode": "mode",
    "clientCertificate": "client_certificate",
    "privateKey": "private_key",
    "caCertificates": "ca_certificates",
    "caCrl": "ca_crl",
    "subjectAltNames": "subject_alt_names",
    "sni": "sni",
    "credentialName": "credential_name",
    "insecureSkipVerify": "insecure_skip_verify",
}
LOAD_BALANCER_SIMPLE = (
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
)

# One level of nested field names for the traffic settings meshsec does not model.
_NESTED_FIELDS: Mapping[str, Mapping[str, tuple[str, ...] | None]] = {
    "loadBalancer": {
        "simple": None,
        "consistentHash": None,
        "localityLbSetting": None,
        "warmupDurationSecs": None,
        "warmup": None,
    },
    "connectionPool": {
        "tcp": (
            "maxConnections",
            "connectTimeout",
            "tcpKeepalive",
            "maxConnectionDuration",
            "idleTimeout",
        ),
        "http": (
            "http1MaxPendingRequests",
            "http2MaxRequests",
            "maxRequestsPerConnection",
            "maxRetries",
            "idleTimeout",
            "h2UpgradePolicy",
            "useClientProtocol",
            "maxConcurrentStreams",
        ),
    },
    "outlierDetection": {
        "splitExternalLocalOriginErrors": None,
        "consecutiveLocalOriginFailures": None,
        "consecutiveGatewayErrors": None,
        "consecutive5xxErrors": None,
        "consecutiveErrors": None,
        "interval": None,
        "baseEjectionTime": None,
        "maxEjectionPercent": None,
        "minHealthPercent": None,
    },
    "tunnel": {"protocol": None, "targetHost": None, "targetPort": None},
    "proxyProtocol": {"version": None},
    "retryBudget": {"percent": None, "minRetryConcurrency": None},
}


def parse_destination_rule(
    r: DocumentReader, spec: dict[str, object], meta: ObjectMeta, origin: Origin, api: str
) -> DestinationRule:
    host = r.string(spec.get("host"), ("spec", "host"), required=True) or ""
    if (host and not _HOST.fullmatch(host)) or len(host) > 255:
        hint = ""
        if "://" in host:
            hint = "; drop the scheme"
        elif ":" in host:
            hint = "; a DestinationRule host has no port (use portLevelSettings for ports)"
        r.report(
            dg.INVALID_VALUE,
            f"host {host!r} is not a DNS name or wildcard (e.g. reviews, "
            f"reviews.prod.svc.cluster.local, *.example.com, *){hint}",
            ("spec", "host"),
        )
    workload_selector = parse_selector(
        r, spec.get("workloadSelector"), ("spec", "workloadSelector")
    )
    traffic_policy = _traffic_policy(r, spec.get("trafficPolicy"), ("spec", "trafficPolicy"))
    subsets: list[Subset] = []
    seen: set[str] = set()
    for i, raw in enumerate(r.sequence(spec.get("subsets"), ("spec", "subsets"), "subsets")):
        path: FieldPath = ("spec", "subsets", i)
        body = r.mapping(raw, path, SUBSET_FIELDS, "Subset")
        if body is None:
            continue
        name = r.string(body.get("name"), (*path, "name"), required=True)
        labels = r.string_map(body.get("labels"), (*path, "labels"), "subset labels", labels=True)
        policy = _traffic_policy(r, body.get("trafficPolicy"), (*path, "trafficPolicy"))
        if name is None:
            continue
        if name in seen:
            r.report(dg.INVALID_VALUE, f"duplicate subset name {name!r}", (*path, "name"))
            continue
        seen.add(name)
        subsets.append(Subset(name=name, labels=labels, traffic_policy=policy))
    export_to = r.strings(spec.get("exportTo"), ("spec", "exportTo"))
    for i, target in enumerate(export_to):
        if target not in (".", "*", "~") and check_dns1123_label(target):
            r.report(
                dg.INVALID_VALUE,
                f"exportTo {target!r} must be '.', '*', '~' or a namespace name",
                ("spec", "exportTo", i),
            )
    return DestinationRule(
        meta=meta,
        origin=origin,
        host=host,
        export_to=export_to,
        workload_selector=workload_selector,
        traffic_policy=traffic_policy,
        subsets=tuple(subsets),
        api_version=api,
    )


def _traffic_policy(r: DocumentReader, value: object, path: FieldPath) -> TrafficPolicy | None:
    if value is None:
        return None
    body = r.mapping(value, path, TRAFFIC_POLICY_FIELDS, "TrafficPolicy")
    if body is None:
        return None
    _check_nested(r, body, path)
    tls = parse_client_tls(r, body.get("tls"), (*path, "tls"))
    lb_simple = _load_balancer_simple(r, body.get("loadBalancer"), (*path, "loadBalancer"))
    ports: list[PortTrafficPolicy] = []
    seen_ports: set[int] = set()
    pls_path: FieldPath = (*path, "portLevelSettings")
    for i, raw in enumerate(
        r.sequence(body.get("portLevelSettings"), pls_path, "portLevelSettings")
    ):
        item_path: FieldPath = (*pls_path, i)
        item = r.mapping(raw, item_path, PORT_TRAFFIC_POLICY_FIELDS, "PortTrafficPolicy")
        if item is None:
            continue
        _check_nested(r, item, item_path)
        port = _port_selector(r, item.get("port"), (*item_path, "port"))
        port_tls = parse_client_tls(r, item.get("tls"), (*item_path, "tls"))
        if port is not None:
            if port.number in seen_ports:
                r.report(
                    dg.DUPLICATE_TRAFFIC_POLICY_PORT,
                    f"port {port.number} appears more than once in portLevelSettings; only the "
                    "first entry is used",
                    (*item_path, "port"),
                )
                continue
            seen_ports.add(port.number)
        ports.append(PortTrafficPolicy(port=port, tls=port_tls))
    return TrafficPolicy(tls=tls, port_level_settings=tuple(ports), load_balancer_simple=lb_simple)


def _check_nested(r: DocumentReader, body: Mapping[str, object], path: FieldPath) -> None:
    for name, subfields in _NESTED_FIELDS.items():
        if name == "tls" or body.get(name) is None:
            continue
        inner = r.mapping(body[name], (*path, name), tuple(subfields), name)
        if inner is None:
            continue
        for sub, allowed in subfields.items():
            if allowed is not None and inner.get(sub) is not None:
                r.mapping(inner[sub], (*path, name, sub), allowed, f"{name}.{sub}")


def _load_balancer_simple(r: DocumentReader, value: object, path: FieldPath) -> str | None:
    if not isinstance(value, Mapping) or value.get("simple") is None:
        return None
    simple = value["simple"]
    if not isinstance(simple, str) or simple not in LOAD_BALANCER_SIMPLE:
        r.report(
            dg.INVALID_ENUM,
            f"invalid loadBalancer.simple {simple!r}; valid values: "
            f"{', '.join(LOAD_BALANCER_SIMPLE)}",
            (*path, "simple"),
        )
        return None
    return simple


def _port_selector(r: DocumentReader, value: object, path: FieldPath) -> PortSelector | None:
    if value is None:
        r.report(dg.MISSING_FIELD, "portLevelSettings entries require port.number", path)
        return None
    body = r.mapping(value, path, ("number",), "PortSelector")
    if body is None:
        return None
    if body.get("number") is None:
        r.report(dg.MISSING_FIELD, "port.number is required", path)
        return None
    number = r.port(body["number"], (*path, "number"))
    return PortSelector(number) if number is not None else None


def parse_client_tls(r: DocumentReader, value: object, path: FieldPath) -> ClientTLSSettings | None:
    """``ClientTLSSettings`` with Istio's validation rules for the mode/field combinations."""
    if value is None:
        return None
    body = r.mapping(value, path, tuple(TLS_FIELDS), "ClientTLSSettings")
    if body is None:
        return None
    mode = r.enum(body.get("mode"), (*path, "mode"), TlsMode, "tls mode") or TlsMode.DISABLE
    text: dict[str, str | None] = {}
    for yaml_name in ("clientCertificate", "privateKey", "caCertificates", "caCrl", "sni"):
        text[yaml_name] = r.string(body.get(yaml_name), (*path, yaml_name))
    credential = r.string(body.get("credentialName"), (*path, "credentialName"))
    sans = r.strings(body.get("subjectAltNames"), (*path, "subjectAltNames"))
    skip = r.boolean(body.get("insecureSkipVerify"), (*path, "insecureSkipVerify"))
    if mode is TlsMode.ISTIO_MUTUAL:
        given = [
            name
            for name in ("clientCertificate", "privateKey", "caCertificates", "credentialName")
            if body.get(name)
        ]
        if given:
            r.report(
                dg.INVALID_VALUE,
                f"{', '.join(given)} cannot be set with mode ISTIO_MUTUAL: the mesh supplies the "
                "certificates; use mode MUTUAL for your own certificates",
                (*path, given[0]),
            )
    if mode is TlsMode.MUTUAL and not credential:
        for name, label in (
            ("clientCertificate", "client certificate"),
            ("privateKey", "private key"),
        ):
            if not text[name]:
                r.report(
                    dg.MISSING_FIELD,
                    f"mode MUTUAL requires {name} ({label}) unless credentialName is set",
                    (*path, "mode"),
                )
    return ClientTLSSettings(
        mode=mode,
        client_certificate=text["clientCertificate"],
        private_key=text["privateKey"],
        ca_certificates=text["caCertificates"],
        ca_crl=text["caCrl"],
        subject_alt_names=sans,
        sni=text["sni"],
        credential_name=credential,
        insecure_skip_verify=skip,
    )
