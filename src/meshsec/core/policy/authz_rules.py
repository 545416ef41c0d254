"""How one AuthorizationPolicy rule matches one request, with Istio's generation rules.

A rule matches when any ``from`` AND any ``to`` AND all ``when`` match; inside a source or
operation every set field must match (values of one field are ORed; ``not*`` values must all miss).
Values Istio cannot build a matcher from make an ALLOW rule skip entirely and are dropped from a
DENY/AUDIT/CUSTOM rule (see :mod:`meshsec.core.policy.authz`); both are recorded in ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshsec.core.policy.authz_match import (
    Outcome,
    Unusable,
    expand_principals,
    expand_trust_domains,
    match_header,
    match_host,
    match_ip_block,
    match_namespace,
    match_path,
    match_port,
    match_principal,
    match_service_account,
    match_string,
    match_trust_domain,
)
from meshsec.core.policy.model import (
    AuthorizationAction,
    AuthorizationPolicy,
    Rule,
    RuleOperation,
    RuleSource,
)
from meshsec.core.policy.request import AuthzRequest


class _SkipRule(Exception):
    """An ALLOW rule with a value Istio cannot build: the whole rule is dropped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


ValueMatcher = Callable[[str], Outcome]


@dataclass(frozen=True)
class _Field:
    key: str
    values: Sequence[str]
    not_values: Sequence[str]
    matcher: ValueMatcher


class RuleEvaluator:
    """Evaluates the rules of one policy against one request."""

    def __init__(
        self, request: AuthzRequest, policy: AuthorizationPolicy, trust_domains: Sequence[str]
    ) -> None:
        self.request = request
        self.policy = policy
        self.trust_domains = trust_domains
        self.strict = policy.action is AuthorizationAction.ALLOW
        self.notes: list[str] = []

    # -- one field -----------------------------------------------------------------------------

    def _any(self, field: _Field, values: Sequence[str], rule: Rule) -> bool | None:
        """OR over values; None when no usable value is left (the field imposes nothing)."""
        usable = False
        hit = False
        for value in values:
            outcome = field.matcher(value)
            if isinstance(outcome, Unusable):
                if self.strict:
                    raise _SkipRule(f"{field.key}: {outcome.reason}")
                self.notes.append(
                    f"{self.policy.action.value} policy {self.policy.meta.key} rule {rule.index}: "
                    f"ignored {field.key} value {value!r} ({outcome.reason})"
                )
                continue
            usable = True
            hit = hit or outcome
        return hit if usable else None

    def _field_matches(self, field: _Field, rule: Rule) -> bool:
        if field.values:
            hit = self._any(field, field.values, rule)
            if hit is False:
                return False
        if field.not_values:
            hit = self._any(field, field.not_values, rule)
            if hit is True:
                return False
        return True

    # -- matchers bound to this request ----------------------------------------------------------

    def _http_only(self, key: str, matcher: ValueMatcher) -> ValueMatcher:
        if self.request.http is None:
            unusable = Unusable(f"{key} is HTTP only and the connection is TCP")
            return lambda _value: unusable
        return matcher

    def _principal(self, value: str) -> Outcome:
        return match_principal(value, self.request.source_principal)

    def _source_fields(self, source: RuleSource) -> list[_Field]:
        req = self.request
        tds = self.trust_domains
        principal = req.source_principal
        ns = self.policy.namespace
        fields = [
            _Field(
                "principals",
                expand_principals(source.principals, tds),
                expand_principals(source.not_principals, tds),
                self._principal,
            ),
            _Field(
                "requestPrincipals",
                source.request_principals,
                source.not_request_principals,
                self._http_only("requestPrincipals", lambda _v: False),
            ),
            _Field(
                "namespaces",
                source.namespaces,
                source.not_namespaces,
                lambda v: match_namespace(v, principal),
            ),
            _Field(
                "serviceAccounts",
                source.service_accounts,
                source.not_service_accounts,
                lambda v: match_service_account(v, principal, ns),
            ),
            _Field(
                "ipBlocks",
                source.ip_blocks,
                source.not_ip_blocks,
                lambda v: match_ip_block(v, req.source_ip),
            ),
            _Field(
                "remoteIpBlocks",
                source.remote_ip_blocks,
                source.not_remote_ip_blocks,
                lambda v: match_ip_block(v, req.effective_remote_ip),
            ),
            _Field(
                "trustDomains",
                expand_trust_domains(source.trust_domains, tds),
                expand_trust_domains(source.not_trust_domains, tds),
                lambda v: match_trust_domain(v, principal),
            ),
        ]
        return [f for f in fields if f.values or f.not_values]

    def _operation_fields(self, operation: RuleOperation) -> list[_Field]:
        req = self.request
        http = req.http
        fields = [
            _Field(
                "hosts",
                operation.hosts,
                operation.not_hosts,
                self._http_only("hosts", lambda v: match_host(v, http.host if http else None)),
            ),
            _Field(
                "ports",
                operation.ports,
                operation.not_ports,
                lambda v: match_port(v, req.destination_port),
            ),
            _Field(
                "methods",
                operation.methods,
                operation.not_methods,
                self._http_only(
                    "methods", lambda v: match_header(v, http.method if http else None)
                ),
            ),
            _Field(
                "paths",
                operation.paths,
                operation.not_paths,
                self._http_only("paths", lambda v: match_path(v, http.path if http else None)),
            ),
        ]
        return [f for f in fields if f.values or f.not_values]

    def _condition_field(
        self, key: str, values: Sequence[str], not_values: Sequence[str]
    ) -> _Field:
        req = self.request
        principal = req.source_principal
        tds = self.trust_domains
        matcher: ValueMatcher
        if key == "source.principal":
            return _Field(
                key,
                expand_principals(values, tds),
                expand_principals(not_values, tds),
                self._principal,
            )
        if key == "source.ip":
            matcher = lambda v: match_ip_block(v, req.source_ip)  # noqa: E731
        elif key == "remote.ip":
            matcher = lambda v: match_ip_block(v, req.effective_remote_ip)  # noqa: E731
        elif key == "source.namespace":
            matcher = lambda v: match_namespace(v, principal)  # noqa: E731
        elif key == "source.serviceAccount":
            ns = self.policy.namespace
            matcher = lambda v: match_service_account(v, principal, ns)  # noqa: E731
        elif key == "destination.ip":
            matcher = lambda v: match_ip_block(v, req.destination_ip)  # noqa: E731
        elif key == "destination.port":
            matcher = lambda v: match_port(v, req.destination_port)  # noqa: E731
        elif key == "connection.sni":
            matcher = lambda v: match_string(v, req.sni)  # noqa: E731
        elif key in _JWT_KEYS or key.startswith("request.auth.claims"):
            # No RequestAuthentication in meshsec: a request never carries JWT attributes.
            matcher = self._http_only(key, lambda _v: False)
        elif key.startswith("request.headers"):
            name = _bracketed(key[len("request.headers") :])
            if name is None:
                bad = Unusable(f"{key!r} must name a header in brackets: request.headers[Name]")
                matcher = lambda _v: bad  # noqa: E731
            else:
                http = req.http
                matcher = self._http_only(
                    key, lambda v: match_header(v, http.header(name) if http else None)
                )
        elif key.startswith("experimental.envoy.filters."):
            unsupported = Unusable(f"{key} (Envoy metadata) is not supported by meshsec")
            matcher = lambda _v: unsupported  # noqa: E731
        else:
            raise _SkipRule(f"unknown when key {key!r}")
        return _Field(key, values, not_values, matcher)

    # -- a whole rule ----------------------------------------------------------------------------

    def rule_matches(self, rule: Rule) -> bool:
        try:
            return self._rule_matches(rule)
        except _SkipRule as skip:
            self.notes.append(
                f"{self.policy.action.value} policy {self.policy.meta.key} rule {rule.index} "
                f"skipped: {skip.reason}"
            )
            return False

    def _rule_matches(self, rule: Rule) -> bool:
        # Build every field first: Istio rejects the whole rule if any value is unusable (ALLOW),
        # whichever clause it sits in, before looking at the request.
        conditions = [self._condition_field(c.key, c.values, c.not_values) for c in rule.when]
        sources = [self._source_fields(s) for s in rule.sources] or [[]]
        operations = [self._operation_fields(o) for o in rule.operations] or [[]]
        if self.strict:
            for group in (conditions, *sources, *operations):
                for f in group:
                    self._check_usable(f)
        if not all(self._field_matches(f, rule) for f in conditions):
            return False
        if not any(all(self._field_matches(f, rule) for f in src) for src in sources):
            return False
        return any(all(self._field_matches(f, rule) for f in op) for op in operations)

    def _check_usable(self, field: _Field) -> None:
        for value in (*field.values, *field.not_values):
            outcome = field.matcher(value)
            if isinstance(outcome, Unusable):
                raise _SkipRule(f"{field.key}: {outcome.reason}")

    def first_match(self) -> int | None:
        for rule in self.policy.rules:
            if self.rule_matches(rule):
                return rule.index
        return None


_JWT_KEYS = ("request.auth.principal", "request.auth.audiences", "request.auth.presenter")


def _bracketed(text: str) -> str | None:
    if len(text) > 2 and text.startswith("[") and text.endswith("]"):
        return text[1:-1]
    return None
