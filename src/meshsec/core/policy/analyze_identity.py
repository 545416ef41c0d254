"""Identity references in AuthorizationPolicies that can never match.

* MS0307 ForeignTrustDomain — a principal (``<td>/ns/<ns>/sa/<sa>``) or ``trustDomains`` value
  whose trust domain is neither the mesh's ``trustDomain``, one of its ``trustDomainAliases``
  nor ``cluster.local`` (which Istio always expands to the mesh trust domains). Istio keeps such
  principals as written and logs a warning; they only match peers certified by another trust
  domain, which is usually a typo or a trust domain migration half done.
* MS0308 ServiceAccountNotFound — a principal or ``serviceAccounts`` value naming a service
  account that does not exist in its namespace, checked only for namespaces whose ServiceAccount
  objects were given (so partial inputs do not produce noise).

Values with ``*`` are patterns and are not checked.
"""

from __future__ import annotations

from collections.abc import Iterator

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.core.policy.model import AuthorizationPolicy
from meshsec.core.policy.snapshot import PolicySnapshot

_ALWAYS_EXPANDED = "cluster.local"


def _values(
    policy: AuthorizationPolicy, attrs: tuple[tuple[str, str], ...]
) -> Iterator[tuple[str, str]]:
    for rule in policy.rules:
        for i, source in enumerate(rule.sources):
            for attr, yaml_name in attrs:
                for j, value in enumerate(getattr(source, attr)):
                    if "*" not in value:
                        path = f"spec.rules[{rule.index}].from[{i}].source.{yaml_name}[{j}]"
                        yield path, value
        if attrs[0][0] == "principals":
            for i, cond in enumerate(rule.when):
                if cond.key == "source.principal":
                    for name, values in (("values", cond.values), ("notValues", cond.not_values)):
                        for j, value in enumerate(values):
                            if "*" not in value:
                                yield f"spec.rules[{rule.index}].when[{i}].{name}[{j}]", value


def _split_principal(value: str) -> tuple[str, str, str] | None:
    """``td/ns/<ns>/sa/<sa>`` → (td, ns, sa); None for other shapes."""
    parts = value.split("/")
    if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa" and all(parts):
        return parts[0], parts[2], parts[4]
    return None


def _diag(policy: AuthorizationPolicy, info: dg.CodeInfo, path: str, message: str) -> Diagnostic:
    return dg.make(
        info,
        message,
        file=policy.origin.file,
        line=policy.origin.line_of(path),
        path=path,
        resource=policy.ref,
    )


def analyze_identity_references(snapshot: PolicySnapshot) -> list[Diagnostic]:
    """MS0307 and MS0308 for every AuthorizationPolicy."""
    mesh = snapshot.mesh_config
    known_tds = {mesh.trust_domain, *mesh.trust_domain_aliases, _ALWAYS_EXPANDED}
    shown_tds = ", ".join(sorted({mesh.trust_domain, *mesh.trust_domain_aliases}))
    accounts: dict[str, set[str]] = {}
    for account in snapshot.service_accounts:
        accounts.setdefault(account.namespace, set()).add(account.name)
    out: list[Diagnostic] = []
    for policy in snapshot.authorization_policies:
        principals = (("principals", "principals"), ("not_principals", "notPrincipals"))
        for path, value in _values(policy, principals):
            parts = _split_principal(value)
            if parts is None:
                continue
            td, ns, sa = parts
            if td not in known_tds:
                out.append(
                    _diag(
                        policy,
                        dg.FOREIGN_TRUST_DOMAIN,
                        path,
                        f"principal {value!r} is in trust domain {td!r}, which is not the mesh's "
                        f"({shown_tds}); it only matches peers from that trust domain (add it "
                        "to meshConfig.trustDomainAliases if it is a former name of this mesh)",
                    )
                )
            if ns in accounts and sa not in accounts[ns]:
                out.append(_missing_account(policy, path, value, ns, sa, accounts[ns]))
        domains = (("trust_domains", "trustDomains"), ("not_trust_domains", "notTrustDomains"))
        for path, value in _values(policy, domains):
            if value not in known_tds:
                out.append(
                    _diag(
                        policy,
                        dg.FOREIGN_TRUST_DOMAIN,
                        path,
                        f"trust domain {value!r} is not the mesh's ({shown_tds}); only peers "
                        "certified by that trust domain match",
                    )
                )
        service_accounts = (
            ("service_accounts", "serviceAccounts"),
            ("not_service_accounts", "notServiceAccounts"),
        )
        for path, value in _values(policy, service_accounts):
            ns, _, sa = value.rpartition("/")
            ns = ns or policy.namespace
            if ns in accounts and sa not in accounts[ns]:
                out.append(_missing_account(policy, path, value, ns, sa, accounts[ns]))
    return out


def _missing_account(
    policy: AuthorizationPolicy, path: str, value: str, ns: str, sa: str, known: set[str]
) -> Diagnostic:
    return _diag(
        policy,
        dg.SERVICE_ACCOUNT_NOT_FOUND,
        path,
        f"{value!r} names service account {sa!r} in namespace {ns}, which has no such "
        f"ServiceAccount (known: {', '.join(sorted(known))})",
    )
