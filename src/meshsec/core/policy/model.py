"""Typed, immutable models of the Istio security resources meshsec understands.

Every object is a frozen dataclass built once by :mod:`meshsec.core.policy.parse`; the rest of
the policy core (composition, client TLS, authorization, analyzers) reads only these types, never
raw dicts. Field names follow Istio's proto names in ``snake_case``; the YAML (JSON) names are
noted where they differ.

Conventions
-----------
* Absent optional values are ``None``; absent lists are ``()``; absent maps are an empty
  :class:`FrozenMap`. Enums carry Istio's exact names (``STRICT``, ``ISTIO_MUTUAL`` ...).
* ``mtls`` absent on a PeerAuthentication is ``MtlsMode.UNSET`` ("inherit").
* Every resource carries ``meta`` (:class:`ObjectMeta`) and ``origin`` (:class:`Origin`: file,
  line, document index and global input order), so decisions and diagnostics can point at it.
* Precedence among peers ("oldest wins") uses :attr:`Resource.precedence_key`:
  ``(creationTimestamp or the zero time, input order)`` -- an object without a timestamp sorts as
  the zero time, like Go's zero ``time.Time`` in Istio; equal times fall back to input order
  (files sorted by path, documents in file order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import cached_property

from meshsec.core.policy.frozen_map import FrozenMap as FrozenMap  # re-exported

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""What a missing ``creationTimestamp`` sorts as (Go's zero time)."""

DEFAULT_ROOT_NAMESPACE = "istio-system"
DEFAULT_TRUST_DOMAIN = "cluster.local"


def _empty_labels() -> FrozenMap[str, str]:
    return FrozenMap()


# --------------------------------------------------------------------------- enums


class MtlsMode(Enum):
    """PeerAuthentication ``MutualTLS.Mode`` (``UNSET`` = inherit from the parent level)."""

    UNSET = "UNSET"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


class TlsMode(Enum):
    """DestinationRule ``ClientTLSSettings.TLSmode`` (proto default ``DISABLE``)."""

    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


class AuthorizationAction(Enum):
    """AuthorizationPolicy ``action`` (default ``ALLOW``)."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


# --------------------------------------------------------------------------- common


@dataclass(frozen=True)
class Origin:
    """Where an object came from.

    ``file`` is the path as given to the source ("" for in-memory input); ``line`` is 1-based
    (0 when unknown); ``document`` is the 0-based index of the YAML document in its file;
    ``order`` is the global input order (files sorted by path, documents in file order);
    ``fields`` maps field paths (``spec.mtls.mode``) to their lines (not part of equality).
    """

    file: str = ""
    line: int = 0
    document: int = 0
    order: int = 0
    fields: FrozenMap[str, int] = field(
        default_factory=lambda: FrozenMap(), compare=False, repr=False
    )

    def line_of(self, path: str) -> int:
        """Line of a field path such as ``spec.trafficPolicy.tls.mode`` (or its nearest
        recorded parent; the object's own line when nothing is recorded)."""
        while path:
            found = self.fields.get(path)
            if found is not None:
                return found
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.line

    def __str__(self) -> str:
        if not self.file:
            return f"<input>:{self.line}" if self.line else "<input>"
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class ObjectMeta:
    """Kubernetes ``metadata``: only the fields meshsec uses.

    ``namespace`` is always set for namespaced kinds (``"default"`` when the YAML omits it, as
    ``kubectl apply`` would); it is ``""`` for cluster-scoped kinds (Namespace).
    """

    name: str
    namespace: str = ""
    creation_timestamp: datetime | None = None
    labels: FrozenMap[str, str] = field(default_factory=_empty_labels)
    annotations: FrozenMap[str, str] = field(default_factory=_empty_labels)

    @property
    def key(self) -> str:
        """``namespace/name`` (just ``name`` for cluster-scoped objects)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class WorkloadSelector:
    """``istio.type.v1beta1.WorkloadSelector``: ``matchLabels`` (exact key/value subset match)."""

    match_labels: FrozenMap[str, str] = field(default_factory=_empty_labels)

    @property
    def is_empty(self) -> bool:
        """An empty ``matchLabels`` selects every workload (treated like no selector)."""
        return not self.match_labels

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when every ``matchLabels`` pair is present in ``labels``."""
        return all(labels.get(k) == v for k, v in self.match_labels.items())


def _selector_is_set(selector: WorkloadSelector | None) -> bool:
    return selector is not None and not selector.is_empty


@dataclass(frozen=True)
class _ResourceBase:
    meta: ObjectMeta
    origin: Origin

    KIND = ""

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def ref(self) -> str:
        """``Kind namespace/name`` as printed in diagnostics and explanations."""
        return f"{self.KIND} {self.meta.key}"

    @property
    def precedence_key(self) -> tuple[datetime, int]:
        """Sort key for "oldest wins": (creationTimestamp or zero time, input order)."""
        return (self.meta.creation_timestamp or ZERO_TIME, self.origin.order)


# --------------------------------------------------------------------------- PeerAuthentication


@dataclass(frozen=True)
class PeerAuthentication(_ResourceBase):
    """``security.istio.io`` PeerAuthentication.

    ``port_level_mtls`` maps a workload (target) port 1-65535 to a mode; the parser only keeps it
    when a non-empty selector is present (otherwise it reports MS-code diagnostics and drops it).
    """

    KIND = "PeerAuthentication"

    selector: WorkloadSelector | None = None
    mtls: MtlsMode = MtlsMode.UNSET
    port_level_mtls: FrozenMap[int, MtlsMode] = field(default_factory=FrozenMap)
    api_version: str = "security.istio.io/v1"

    @property
    def has_selector(self) -> bool:
        """True when the selector has at least one label (workload-level candidate)."""
        return _selector_is_set(self.selector)


# --------------------------------------------------------------------------- DestinationRule


@dataclass(frozen=True)
class ClientTLSSettings:
    """``ClientTLSSettings`` (YAML camelCase names in parentheses).

    ``mode`` defaults to ``DISABLE`` (proto zero value) when a ``tls`` block omits it.
    ``insecure_skip_verify`` is ``None`` when absent (BoolValue).
    """

    mode: TlsMode = TlsMode.DISABLE
    client_certificate: str | None = None  # clientCertificate
    private_key: str | None = None  # privateKey
    ca_certificates: str | None = None  # caCertificates
    ca_crl: str | None = None  # caCrl
    subject_alt_names: tuple[str, ...] = ()  # subjectAltNames
    sni: str | None = None
    credential_name: str | None = None  # credentialName
    insecure_skip_verify: bool | None = None  # insecureSkipVerify


@dataclass(frozen=True)
class PortSelector:
    """``PortSelector``: ``number`` (1-65535)."""

    number: int


@dataclass(frozen=True)
class PortTrafficPolicy:
    """One ``portLevelSettings`` entry; replaces (never merges) the destination-level policy."""

    port: PortSelector | None = None
    tls: ClientTLSSettings | None = None


@dataclass(frozen=True)
class TrafficPolicy:
    """``TrafficPolicy``: the TLS-relevant parts.

    ``load_balancer_simple`` keeps ``loadBalancer.simple`` (e.g. ``PASSTHROUGH`` matters for auto
    mTLS inference); other traffic fields (connectionPool, outlierDetection ...) are accepted
    and validated for shape only.
    """

    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()  # portLevelSettings
    load_balancer_simple: str | None = None


@dataclass(frozen=True)
class Subset:
    """A DestinationRule subset: ``name``, ``labels`` and an optional overriding policy."""

    name: str
    labels: FrozenMap[str, str] = field(default_factory=_empty_labels)
    traffic_policy: TrafficPolicy | None = None  # trafficPolicy


@dataclass(frozen=True)
class DestinationRule(_ResourceBase):
    """``networking.istio.io`` DestinationRule (``v1``, ``v1beta1``, ``v1alpha3``)."""

    KIND = "DestinationRule"

    host: str = ""
    export_to: tuple[str, ...] = ()  # exportTo
    workload_selector: WorkloadSelector | None = None  # workloadSelector
    traffic_policy: TrafficPolicy | None = None  # trafficPolicy
    subsets: tuple[Subset, ...] = ()
    api_version: str = "networking.istio.io/v1"


# --------------------------------------------------------------------------- AuthorizationPolicy


@dataclass(frozen=True)
class RuleSource:
    """``Source`` of a rule's ``from`` entry. Fields are ANDed; values within a field ORed."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleOperation:
    """``Operation`` of a rule's ``to`` entry. Ports are strings as in Istio's proto."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Condition:
    """A ``when`` condition: ``key`` (required), ``values`` and ``notValues``."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """A rule: any ``from`` AND any ``to`` AND all ``when``.

    ``sources`` = YAML ``from[].source``, ``operations`` = ``to[].operation``, ``when`` = ``when``.
    An empty tuple means the clause is absent (matches anything). ``index`` is the rule's
    position in ``rules`` (for explanations: "rule 0").
    """

    sources: tuple[RuleSource, ...] = ()
    operations: tuple[RuleOperation, ...] = ()
    when: tuple[Condition, ...] = ()
    index: int = 0


@dataclass(frozen=True)
class AuthorizationPolicy(_ResourceBase):
    """``security.istio.io`` AuthorizationPolicy.

    ``rules`` empty means the policy never matches (an ALLOW policy with no rules denies all).
    ``provider`` is ``provider.name`` (CUSTOM only). A policy in the root namespace applies
    mesh-wide.
    """

    KIND = "AuthorizationPolicy"

    selector: WorkloadSelector | None = None
    action: AuthorizationAction = AuthorizationAction.ALLOW
    provider: str | None = None
    rules: tuple[Rule, ...] = ()
    api_version: str = "security.istio.io/v1"

    @property
    def has_selector(self) -> bool:
        return _selector_is_set(self.selector)


# --------------------------------------------------------------------------- registry kinds


@dataclass(frozen=True)
class Namespace(_ResourceBase):
    """A Kubernetes Namespace (cluster-scoped: ``meta.namespace == ""``); labels in ``meta``."""

    KIND = "Namespace"

    @property
    def ref(self) -> str:
        return f"Namespace {self.meta.name}"


@dataclass(frozen=True)
class ServiceAccount(_ResourceBase):
    """A Kubernetes ServiceAccount."""

    KIND = "ServiceAccount"


@dataclass(frozen=True)
class ServicePort:
    """``ServicePort``: ``target_port`` is an int, a named port (str) or ``None`` (= ``port``)."""

    port: int
    name: str | None = None
    target_port: int | str | None = None  # targetPort
    protocol: str = "TCP"
    app_protocol: str | None = None  # appProtocol

    @property
    def effective_target_port(self) -> int | str:
        """``targetPort`` if given, else ``port`` (Kubernetes default)."""
        return self.port if self.target_port is None else self.target_port


@dataclass(frozen=True)
class Service(_ResourceBase):
    """A Kubernetes Service: ``selector`` (None = no selector) and ports.

    ``hostname`` is ``<name>.<namespace>.svc.cluster.local``.
    """

    KIND = "Service"

    selector: FrozenMap[str, str] | None = None
    ports: tuple[ServicePort, ...] = ()

    @cached_property
    def hostname(self) -> str:
        return f"{self.meta.name}.{self.meta.namespace}.svc.cluster.local"

    def selects(self, labels: Mapping[str, str]) -> bool:
        """True when the Service's (non-empty) selector matches ``labels``."""
        if not self.selector:
            return False
        return all(labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True)
class Workload(_ResourceBase):
    """A running workload: a Pod, a pod template of a Deployment/StatefulSet/DaemonSet/
    ReplicaSet/Job, or meshsec's own ``Workload`` kind (``meshsec.io/v1alpha1``).

    ``labels`` are the pod labels (for controllers: ``spec.template.metadata.labels``);
    ``service_account`` defaults to ``"default"``; ``ports`` are container ports;
    ``source_kind`` is the kind it came from.
    """

    KIND = "Workload"

    labels: FrozenMap[str, str] = field(default_factory=_empty_labels)
    service_account: str = "default"
    ports: tuple[int, ...] = ()
    source_kind: str = "Workload"
    # meshsec ``Workload`` only (what ``meshsec up`` runs); empty for Pods and controllers.
    command: tuple[str, ...] = ()
    env: FrozenMap[str, str] = field(default_factory=_empty_labels)
    port_specs: tuple[WorkloadPort, ...] = ()
    mount_mtls_certs: bool = False
    # meshsec ``Workload`` ``spec.cluster`` (``meshsec up`` clusters); "" = the mesh's only one.
    cluster: str = ""

    @property
    def ref(self) -> str:
        where = f"@{self.cluster}" if self.cluster else ""
        return f"{self.source_kind} {self.meta.key}{where}"

    def port_spec(self, port: int) -> WorkloadPort | None:
        """The declared port ``port`` (protocol, name), if this workload declared it."""
        for spec in self.port_specs:
            if spec.port == port:
                return spec
        return None


@dataclass(frozen=True)
class WorkloadPort:
    """A port of a meshsec ``Workload``: number, protocol (``http`` or ``tcp``), optional name."""

    port: int
    protocol: str = "tcp"
    name: str = ""

    @property
    def is_http(self) -> bool:
        return self.protocol == "http"


@dataclass(frozen=True)
class MeshConfig:
    """The mesh config from the ``istio`` ConfigMap in ``istio-system`` (``data.mesh`` YAML).

    ``origin`` is ``None`` when no ConfigMap was given (all defaults).
    """

    trust_domain: str = DEFAULT_TRUST_DOMAIN  # trustDomain
    trust_domain_aliases: tuple[str, ...] = ()  # trustDomainAliases
    root_namespace: str = DEFAULT_ROOT_NAMESPACE  # rootNamespace
    enable_auto_mtls: bool = True  # enableAutoMtls
    origin: Origin | None = None


Resource = (
    PeerAuthentication
    | DestinationRule
    | AuthorizationPolicy
    | Namespace
    | ServiceAccount
    | Service
    | Workload
)
