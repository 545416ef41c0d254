"""Parse the ``spec`` of ``security.istio.io`` PeerAuthentication and AuthorizationPolicy.

Validation follows Istio's CRD schemas and its webhook validation: unknown fields, types, enum
names, port ranges, ``portLevelMtls requires selector``, ``from``/``to`` entries that must not be
empty, ``when`` keys, CUSTOM/provider pairing. Every problem is a diagnostic on the reader.
"""

from __future__ import annotations

import ipaddress
from dataclasses import fields as dataclass_fields
from typing import TypeVar

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.document import (
    DocumentReader,
    FieldPath,
    format_path,
    parse_port_text,
    show_value,
    too_many_port_digits,
)
from meshsec.core.policy.model import (
    AuthorizationAction,
    AuthorizationPolicy,
    Condition,
    FrozenMap,
    MtlsMode,
    ObjectMeta,
    Origin,
    PeerAuthentication,
    Rule,
    RuleOperation,
    RuleSource,
    WorkloadSelector,
)

PA_SPEC_FIELDS = ("selector", "mtls", "portLevelMtls")
AP_SPEC_FIELDS = ("selector", "targetRef", "targetRefs", "rules", "action", "provider")
SELECTOR_FIELDS = ("matchLabels",)
MTLS_FIELDS = ("mode",)
RULE_FIELDS = ("from", "to", "when")

SOURCE_FIELDS = {
    "principals": "principals",
    "notPrincipals": "not_principals",
    "requestPrincipals": "request_principals",
    "notRequestPrincipals": "not_request_principals",
    "namespaces": "namespaces",
    "notNamespaces": "not_namespaces",
    "serviceAccounts": "service_accounts",
    "notServiceAccounts": "not_service_accounts",
    "ipBlocks": "ip_blocks",
    "notIpBlocks": "not_ip_blocks",
    "remoteIpBlocks": "remote_ip_blocks",
    "notRemoteIpBlocks": "not_remote_ip_blocks",
    "trustDomains": "trust_domains",
    "notTrustDomains": "not_trust_domains",
}
OPERATION_FIELDS = {
    "hosts": "hosts",
    "notHosts": "not_hosts",
    "ports": "ports",
    "notPorts": "not_ports",
    "methods": "methods",
    "notMethods": "not_methods",
    "paths": "paths",
    "notPaths": "not_paths",
}
CONDITION_FIELDS = ("key", "values", "notValues")

# Keys Istio accepts in `when` (istio.io "Authorization Policy Conditions").
CONDITION_KEYS = (
    "request.headers",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters",
)
_BRACKETED_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters")
_IP_FIELDS = frozenset({"ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks"})
_PRINCIPAL_FIELDS = frozenset({"principals", "not_principals"})

assert {f.name for f in dataclass_fields(RuleSource)} == set(SOURCE_FIELDS.values())
assert {f.name for f in dataclass_fields(RuleOperation)} == set(OPERATION_FIELDS.values())


def parse_selector(r: DocumentReader, value: object, path: FieldPath) -> WorkloadSelector | None:
    """``selector``/``workloadSelector``: ``{matchLabels: {k: v}}``; absent gives None."""
    if value is None:
        return None
    raw = r.mapping(value, path, SELECTOR_FIELDS, "WorkloadSelector")
    if raw is None:
        return None
    labels = r.string_map(
        raw.get("matchLabels"), (*path, "matchLabels"), "matchLabels", labels=True
    )
    return WorkloadSelector(labels)  # label syntax already rejects wildcards


def _mode(r: DocumentReader, value: object, path: FieldPath) -> MtlsMode:
    raw = r.mapping(value, path, MTLS_FIELDS, "MutualTLS")
    if not raw:
        return MtlsMode.UNSET
    mode = r.enum(raw.get("mode"), (*path, "mode"), MtlsMode, "mtls mode")
    return mode or MtlsMode.UNSET


def parse_peer_authentication(
    r: DocumentReader, spec: dict[str, object], meta: ObjectMeta, origin: Origin, api: str
) -> PeerAuthentication:
    selector = parse_selector(r, spec.get("selector"), ("spec", "selector"))
    mtls = _mode(r, spec.get("mtls"), ("spec", "mtls"))
    ports: dict[int, MtlsMode] = {}
    raw_ports = spec.get("portLevelMtls")
    plm_path: FieldPath = ("spec", "portLevelMtls")
    if raw_ports is not None:
        if not isinstance(raw_ports, dict):
            r.wrong_type(raw_ports, plm_path, "a mapping of port number to {mode: ...}")
        else:
            written: dict[int, object] = {}
            for key, item in raw_ports.items():
                port_path = (*plm_path, key if isinstance(key, str | int) else str(key))
                port = r.port(key, port_path, "portLevelMtls port")
                mode = _mode(r, item, port_path)
                if port is None:
                    continue
                if port in written:  # 8080 and "8080" are different YAML keys, one port
                    r.report(
                        dg.DUPLICATE_KEY,
                        f"portLevelMtls port {port} appears twice (as {show_value(written[port])} "
                        f"and {show_value(key)}); give each port once",
                        port_path,
                    )
                    continue
                written[port] = key
                ports[port] = mode
            if not raw_ports:
                r.report(dg.MISSING_FIELD, "portLevelMtls must not be empty when given", plm_path)
    has_selector = selector is not None and not selector.is_empty
    if raw_ports and not has_selector:
        r.report(
            dg.PORT_LEVEL_NO_SELECTOR,
            "portLevelMtls requires a selector with matchLabels: port-level mTLS applies only "
            "to workload-level policies (Istio rejects this policy: 'portLevelMtls requires "
            "selector'); add spec.selector.matchLabels or move the port settings to a "
            "workload policy",
            plm_path,
        )
        ports = {}
    return PeerAuthentication(
        meta=meta,
        origin=origin,
        selector=selector,
        mtls=mtls,
        port_level_mtls=FrozenMap(ports),
        api_version=api,
    )


# --------------------------------------------------------------------------- AuthorizationPolicy


def parse_authorization_policy(
    r: DocumentReader, spec: dict[str, object], meta: ObjectMeta, origin: Origin, api: str
) -> AuthorizationPolicy:
    selector = parse_selector(r, spec.get("selector"), ("spec", "selector"))
    action = r.enum(spec.get("action"), ("spec", "action"), AuthorizationAction, "action")
    action = action or AuthorizationAction.ALLOW
    provider = _provider(r, spec.get("provider"))
    for ref in ("targetRef", "targetRefs"):
        if spec.get(ref) is not None:
            r.report(
                dg.UNSUPPORTED_FIELD,
                f"{ref} attaches a policy to a Gateway or Service (waypoints/ambient); meshsec "
                "enforces policies on sidecars by selector only, and ignoring it would widen "
                "the policy to the whole namespace, so the policy is not loaded; use "
                "spec.selector.matchLabels",
                ("spec", ref),
                level=dg.Level.ERROR,
            )
            if selector is not None:
                r.report(
                    dg.INVALID_VALUE,
                    f"selector and {ref} are mutually exclusive",
                    ("spec", ref),
                )
    if action is AuthorizationAction.CUSTOM:
        if provider is None:
            r.report(
                dg.MISSING_FIELD,
                "action CUSTOM requires provider.name (an extension provider from meshConfig)",
                ("spec", "action"),
            )
        r.report(
            dg.CUSTOM_UNSUPPORTED,
            "action CUSTOM delegates to an external authorizer (provider), which meshsec "
            "does not have: requests this policy's rules match are denied (fail closed) and "
            "requests it does not match go on to the DENY and ALLOW policies",
            ("spec", "action"),
        )
    elif provider is not None:
        r.report(
            dg.INVALID_VALUE,
            f"provider is only allowed with action CUSTOM, not {action.name}",
            ("spec", "provider"),
        )
    rules: list[Rule] = []
    for i, raw in enumerate(r.sequence(spec.get("rules"), ("spec", "rules"), "rules")):
        rule = _rule(r, raw, ("spec", "rules", i), i)
        if rule is not None:
            rules.append(rule)
    return AuthorizationPolicy(
        meta=meta,
        origin=origin,
        selector=selector,
        action=action,
        provider=provider,
        rules=tuple(rules),
        api_version=api,
    )


def _provider(r: DocumentReader, value: object) -> str | None:
    if value is None:
        return None
    raw = r.mapping(value, ("spec", "provider"), ("name",), "ExtensionProvider")
    if raw is None:
        return None
    return r.string(raw.get("name"), ("spec", "provider", "name"), required=True)


def _rule(r: DocumentReader, value: object, path: FieldPath, index: int) -> Rule | None:
    raw = r.mapping(value, path, RULE_FIELDS, "Rule")
    if raw is None:
        return None
    sources: list[RuleSource] = []
    for i, item in enumerate(r.sequence(raw.get("from"), (*path, "from"), "from")):
        src = _clause(r, item, (*path, "from", i), "source", SOURCE_FIELDS, RuleSource)
        if src is not None:
            sources.append(src)
    operations: list[RuleOperation] = []
    for i, item in enumerate(r.sequence(raw.get("to"), (*path, "to"), "to")):
        op = _clause(r, item, (*path, "to", i), "operation", OPERATION_FIELDS, RuleOperation)
        if op is not None:
            operations.append(op)
    conditions: list[Condition] = []
    for i, item in enumerate(r.sequence(raw.get("when"), (*path, "when"), "when")):
        cond = _condition(r, item, (*path, "when", i))
        if cond is not None:
            conditions.append(cond)
    return Rule(tuple(sources), tuple(operations), tuple(conditions), index)


ClauseT = TypeVar("ClauseT", RuleSource, RuleOperation)


def _clause(
    r: DocumentReader,
    value: object,
    path: FieldPath,
    key: str,
    names: dict[str, str],
    cls: type[ClauseT],
) -> ClauseT | None:
    wrapper = "From" if key == "source" else "To"
    raw = r.mapping(value, path, (key,), wrapper)
    if raw is None:
        return None
    inner_path: FieldPath = (*path, key)
    if raw.get(key) is None:
        r.report(dg.MISSING_FIELD, f"{format_path(inner_path)} is required", inner_path)
        return None
    what = "Source" if key == "source" else "Operation"
    before = len(r.diagnostics)
    body = r.mapping(raw[key], inner_path, tuple(names), what)
    if body is None:
        return None
    values: dict[str, tuple[str, ...]] = {}
    for yaml_name, attr in names.items():
        field_path: FieldPath = (*inner_path, yaml_name)
        hint = ""
        if attr in ("ports", "not_ports"):
            hint = 'ports are strings in AuthorizationPolicy: write ports: ["8080"]'
        items = r.strings(body.get(yaml_name), field_path, hint=hint)
        for j, text in enumerate(items):
            _check_value(r, attr, text, (*field_path, j))
        if body.get(yaml_name) is not None and not items and isinstance(body[yaml_name], list):
            r.report(dg.MISSING_FIELD, f"{format_path(field_path)} must not be empty", field_path)
        values[attr] = items
    if not any(values.values()) and len(r.diagnostics) == before:
        r.report(
            dg.MISSING_FIELD,
            f"{format_path(inner_path)} must set at least one field (Istio rejects an empty "
            f"{what}); drop the entry to match any {key}",
            inner_path,
        )
    return cls(**values)


def _check_value(r: DocumentReader, attr: str, text: str, path: FieldPath) -> None:
    if attr in _IP_FIELDS:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            r.report(dg.INVALID_VALUE, f"{text!r} is not an IP address or CIDR block", path)
    elif attr in ("ports", "not_ports"):
        if parse_port_text(text) is None:
            too_long = too_many_port_digits(text)
            msg = too_long or f"port {show_value(text)} must be a number in 1-65535"
            r.report(dg.PORT_RANGE, msg, path)
    elif attr in _PRINCIPAL_FIELDS and text.startswith("spiffe://"):
        r.report(
            dg.INVALID_VALUE,
            f"principal {text!r} includes the spiffe:// scheme, so it never matches; "
            f"Istio principals are written without it: {text[len('spiffe://') :]!r}",
            path,
        )


def _condition(r: DocumentReader, value: object, path: FieldPath) -> Condition | None:
    raw = r.mapping(value, path, CONDITION_FIELDS, "Condition")
    if raw is None:
        return None
    key = r.string(raw.get("key"), (*path, "key"), required=True)
    values = r.strings(raw.get("values"), (*path, "values"))
    not_values = r.strings(raw.get("notValues"), (*path, "notValues"))
    if key is None:
        return None
    base = key.split("[", 1)[0]
    if base not in CONDITION_KEYS or (
        base in _BRACKETED_KEYS and not (key.endswith("]") and "[" in key)
    ):
        r.report(
            dg.INVALID_VALUE,
            f"unknown condition key {key!r}; valid keys: {', '.join(CONDITION_KEYS)} "
            f"({', '.join(k + '[...]' for k in _BRACKETED_KEYS)} take a name in brackets)",
            (*path, "key"),
        )
        return None
    if not values and not not_values:
        r.report(
            dg.MISSING_FIELD,
            f"condition {key!r} needs values or notValues",
            path,
        )
        return None
    if key == "destination.port":
        for text in values + not_values:
            if parse_port_text(text) is None:
                too_long = too_many_port_digits(text, "destination.port value")
                msg = too_long or f"destination.port value {show_value(text)} is not 1-65535"
                r.report(dg.PORT_RANGE, msg, path)
                break
    return Condition(key=key, values=values, not_values=not_values)
