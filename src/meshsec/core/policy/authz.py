"""AuthorizationPolicy evaluation with Istio's semantics (§5.5); every decision says why.

Which policies apply to a workload (:func:`select_authorization_policies`): those in its namespace
whose selector matches its labels (no selector or empty ``matchLabels`` = every workload) and those
in the root namespace, which apply mesh-wide (a selector there matches workloads in every
namespace).

Evaluation order (:func:`evaluate`):

1. **CUSTOM** — meshsec has no external authorizer. A CUSTOM policy whose rule matches the request
   **denies** it (fail closed) with a reason saying so; the analyzer also reports CUSTOM as
   unsupported. A CUSTOM policy whose rules do not match has no effect.
2. **DENY** — any matching rule denies.
3. **AUDIT** — matching rules are recorded (``Decision.audited_by``), never decide.
4. **ALLOW** — when no ALLOW policy applies, the request is allowed; otherwise a matching rule
   allows it and no match denies it (deny by default). An ALLOW policy with no rules matches
   nothing, so alone it denies everything; ``rules: [{}]`` matches everything.

A rule matches when any ``from`` AND any ``to`` AND all ``when`` match; inside a source or
operation all set fields must match (values of one field are ORed; ``not*`` values must all miss).

Values Istio cannot build a matcher from (HTTP-only fields on a TCP connection, non-numeric ports,
bad CIDRs, unknown or unsupported ``when`` keys) follow Istio's generation rules: in an **ALLOW**
rule the whole rule is skipped (it cannot allow anything); in a **DENY**/**AUDIT**/**CUSTOM** rule
only the unusable value is dropped (so a DENY on ``methods`` denies every TCP connection). Each
skip is recorded in ``Decision.notes``. An unknown ``when`` key makes Istio reject the whole rule
whatever the action.

Request principals / JWT claims: meshsec does not implement RequestAuthentication, so a request
never has a request principal: ``requestPrincipals`` and ``request.auth.*`` values never match
(their ``not`` forms always do); on TCP they are HTTP-only fields as above.

Peer identity fields (``principals``, ``namespaces``, ``serviceAccounts``, ``trustDomains``,
``source.principal`` ...) need mTLS: on a plaintext connection the values never match.
``principals``/``notPrincipals``/``source.principal`` are expanded with trust-domain aliases
(and ``cluster.local`` always means the mesh trust domain); ``trustDomains`` naming a known trust
domain stand for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from meshsec.core.policy.authz_rules import RuleEvaluator
from meshsec.core.policy.model import (
    AuthorizationAction,
    AuthorizationPolicy,
    MeshConfig,
)
from meshsec.core.policy.request import AuthzRequest


class Verdict(Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


class Stage(Enum):
    """Which step of the evaluation decided."""

    NO_POLICY = "no-policy"  # no policy applies at all: allow
    CUSTOM = "CUSTOM"  # a CUSTOM rule matched: deny (unsupported, fail closed)
    DENY = "DENY"  # a DENY rule matched
    NO_ALLOW_POLICY = "no-allow-policy"  # policies apply but none is ALLOW: allow
    ALLOW = "ALLOW"  # an ALLOW rule matched
    DEFAULT_DENY = "default-deny"  # ALLOW policies apply and none matched


@dataclass(frozen=True)
class RuleMatch:
    """A policy and the index of its rule that matched."""

    policy: AuthorizationPolicy
    rule: int

    def __str__(self) -> str:
        return f"{self.policy.meta.key} rule {self.rule}"


@dataclass(frozen=True)
class Decision:
    """The verdict and what decided it: the stage, the policy and rule (when one did), a reason.

    ``notes`` record rules skipped or values ignored on the way; ``audited_by`` the AUDIT rules
    that matched; ``considered`` every policy that applied.
    """

    verdict: Verdict
    stage: Stage
    reason: str
    policy: AuthorizationPolicy | None = None
    rule: int | None = None
    audited_by: tuple[RuleMatch, ...] = ()
    notes: tuple[str, ...] = ()
    considered: tuple[AuthorizationPolicy, ...] = ()
    scope: str | None = None  # the deciding policy's reach: "mesh", "namespace" or "workload"

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


def policy_scope(policy: AuthorizationPolicy, mesh: MeshConfig) -> str:
    """``mesh`` (root namespace), ``workload`` (has a selector) or ``namespace``."""
    if policy.namespace == mesh.root_namespace:
        return "mesh"
    return "workload" if policy.has_selector else "namespace"


# ------------------------------------------------------------------------------ applicability


def select_authorization_policies(
    namespace: str,
    labels: Mapping[str, str],
    policies: Iterable[AuthorizationPolicy],
    mesh: MeshConfig,
) -> tuple[AuthorizationPolicy, ...]:
    """Policies applying to a workload: its namespace's and the root namespace's, by selector."""
    out = []
    for policy in policies:
        if policy.namespace not in (namespace, mesh.root_namespace):
            continue
        if policy.selector is None or policy.selector.matches(labels):
            out.append(policy)
    return tuple(out)


class AuthorizationIndex:
    """AuthorizationPolicies grouped by namespace once, for many workloads of one snapshot."""

    def __init__(self, policies: Iterable[AuthorizationPolicy], mesh: MeshConfig) -> None:
        self.mesh = mesh
        self._by_ns: dict[str, list[tuple[int, AuthorizationPolicy]]] = {}
        for position, policy in enumerate(policies):
            self._by_ns.setdefault(policy.namespace, []).append((position, policy))

    def for_workload(
        self, namespace: str, labels: Mapping[str, str]
    ) -> tuple[AuthorizationPolicy, ...]:
        """Same result as :func:`select_authorization_policies` (input order kept)."""
        entries = list(self._by_ns.get(namespace, ()))
        if namespace != self.mesh.root_namespace:
            entries += self._by_ns.get(self.mesh.root_namespace, ())
        entries.sort(key=lambda e: e[0])
        return tuple(p for _, p in entries if p.selector is None or p.selector.matches(labels))


# ------------------------------------------------------------------------------ evaluation


def evaluate(
    request: AuthzRequest,
    policies: Iterable[AuthorizationPolicy],
    mesh: MeshConfig,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Decision:
    """Decide ``request`` against ``policies``.

    With ``namespace`` (and ``labels``) the policies are first narrowed to those that apply to
    that workload (:func:`select_authorization_policies`); without, every given policy applies.
    """
    applying = tuple(policies)
    if namespace is not None:
        applying = select_authorization_policies(namespace, labels or {}, applying, mesh)
    trust_domains = (mesh.trust_domain, *mesh.trust_domain_aliases)
    notes: list[str] = []
    audited: list[RuleMatch] = []

    def run(policy: AuthorizationPolicy) -> int | None:
        evaluator = RuleEvaluator(request, policy, trust_domains)
        index = evaluator.first_match()
        notes.extend(evaluator.notes)
        return index

    def decided(
        verdict: Verdict, stage: Stage, reason: str, match: RuleMatch | None = None
    ) -> Decision:
        return Decision(
            verdict=verdict,
            stage=stage,
            reason=reason,
            policy=match.policy if match else None,
            rule=match.rule if match else None,
            audited_by=tuple(audited),
            notes=tuple(notes),
            considered=applying,
            scope=policy_scope(match.policy, mesh) if match else None,
        )

    if not applying:
        return decided(
            Verdict.ALLOW, Stage.NO_POLICY, "no AuthorizationPolicy applies to the workload: allow"
        )

    by_action = {
        action: [p for p in applying if p.action is action] for action in AuthorizationAction
    }

    for policy in by_action[AuthorizationAction.CUSTOM]:
        index = run(policy)
        if index is not None:
            provider = f" (provider {policy.provider})" if policy.provider else ""
            return decided(
                Verdict.DENY,
                Stage.CUSTOM,
                f"CUSTOM policy {policy.meta.key}{provider} rule {index} matched; meshsec has no "
                "external authorizer, so CUSTOM fails closed: deny",
                RuleMatch(policy, index),
            )

    for policy in by_action[AuthorizationAction.DENY]:
        index = run(policy)
        if index is not None:
            return decided(
                Verdict.DENY,
                Stage.DENY,
                f"DENY policy {policy.meta.key} rule {index} matched",
                RuleMatch(policy, index),
            )

    for policy in by_action[AuthorizationAction.AUDIT]:
        index = run(policy)
        if index is not None:
            audited.append(RuleMatch(policy, index))

    allow_policies = by_action[AuthorizationAction.ALLOW]
    if not allow_policies:
        return decided(
            Verdict.ALLOW,
            Stage.NO_ALLOW_POLICY,
            "no DENY rule matched and no ALLOW policy applies: allow",
        )
    for policy in allow_policies:
        index = run(policy)
        if index is not None:
            return decided(
                Verdict.ALLOW,
                Stage.ALLOW,
                f"ALLOW policy {policy.meta.key} rule {index} matched",
                RuleMatch(policy, index),
            )
    names = ", ".join(p.meta.key for p in allow_policies)
    empty = [p.meta.key for p in allow_policies if not p.rules]
    detail = f"; {', '.join(empty)} ha{'s' if len(empty) == 1 else 've'} no rules" if empty else ""
    plaintext = (
        "; the connection has no peer identity (plaintext)" if not request.source_principal else ""
    )
    return decided(
        Verdict.DENY,
        Stage.DEFAULT_DENY,
        f"no ALLOW rule matched ({len(allow_policies)} ALLOW "
        f"polic{'y' if len(allow_policies) == 1 else 'ies'} apply: {names}){detail}{plaintext}: "
        "deny by default",
    )


evaluate_authorization = evaluate
