"""Diagnostics: problems in user config as values with stable codes.

A :class:`Diagnostic` says what is wrong and where (file, line, field path, resource). Codes are
stable: Istio's own ``istioctl analyze`` codes where one exists (``IST0101``, ``IST0127``,
``IST0128``, ``IST0129``), meshsec codes (``MS0xxx``) for everything else. The :data:`CATALOG`
lists every code with its level and a one-line summary (``meshsec analyze --help`` and
docs/cli.md print it).

Code ranges: ``MS00xx`` input/document shape, ``MS01xx`` schema (fields, types, enums, values),
``MS02xx`` removed or unsupported Istio APIs, ``MS03xx`` cross-resource semantics (analyzers).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Level(Enum):
    """Severity, ordered ERROR > WARNING > INFO (Istio's analyzer levels)."""

    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"

    @property
    def rank(self) -> int:
        return {"Error": 2, "Warning": 1, "Info": 0}[self.value]


@dataclass(frozen=True)
class CodeInfo:
    """A catalog entry: stable ``code``, Istio-style ``name``, default ``level``, ``summary``."""

    code: str
    name: str
    level: Level
    summary: str


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in the input.

    ``file``/``line`` point at the offending node (line 1-based, 0 unknown); ``path`` is the
    field path inside the document (``spec.trafficPolicy.tls.maxSessionAge``); ``resource`` is
    ``Kind namespace/name`` when known (``""`` when the document is too broken to tell).
    """

    code: str
    level: Level
    message: str
    file: str = ""
    line: int = 0
    path: str = ""
    resource: str = ""

    @property
    def location(self) -> str:
        """``file:line`` (``<input>`` when the input had no file name)."""
        name = self.file or "<input>"
        return f"{name}:{self.line}" if self.line else name

    def __str__(self) -> str:
        where = self.location
        what = f" {self.resource}" if self.resource else ""
        field_ = f" ({self.path})" if self.path else ""
        return f"{where}: {self.level.value} [{self.code}]{what}{field_}: {self.message}"


def _c(code: str, name: str, level: Level, summary: str) -> CodeInfo:
    return CodeInfo(code, name, level, summary)


E, W, INFO_ = Level.ERROR, Level.WARNING, Level.INFO

# Input and document shape.
YAML_SYNTAX = _c("MS0001", "YamlSyntaxError", E, "the file is not valid YAML")
NOT_A_MAPPING = _c("MS0002", "DocumentNotAMapping", E, "a YAML document is not a mapping")
MISSING_TYPE = _c("MS0003", "MissingKindOrApiVersion", E, "a document has no apiVersion or kind")
UNKNOWN_KIND = _c("MS0004", "KindIgnored", INFO_, "a kind meshsec does not analyze was skipped")
DUPLICATE_RESOURCE = _c(
    "MS0005", "DuplicateResource", E, "two documents define the same kind, namespace and name"
)
UNREADABLE = _c("MS0006", "UnreadableInput", E, "a file or directory could not be read")
NO_INPUT = _c("MS0007", "NoConfigFound", W, "no YAML files were found")
# Schema.
UNKNOWN_FIELD = _c("MS0101", "UnknownField", E, "a field that the resource's schema does not have")
WRONG_TYPE = _c("MS0102", "WrongType", E, "a field has the wrong type")
INVALID_ENUM = _c("MS0103", "InvalidEnumValue", E, "an enum field has a value it does not allow")
MISSING_FIELD = _c("MS0104", "MissingRequiredField", E, "a required field is missing or empty")
PORT_RANGE = _c("MS0105", "PortOutOfRange", E, "a port is not in 1-65535")
PORT_LEVEL_NO_SELECTOR = _c(
    "MS0106", "PortLevelMtlsWithoutSelector", E, "portLevelMtls requires a non-empty selector"
)
INVALID_LABEL = _c("MS0107", "InvalidLabelSelector", E, "a label key or value is not valid")
INVALID_NAME = _c("MS0108", "InvalidName", E, "metadata name/namespace is not a DNS-1123 name")
INVALID_TIMESTAMP = _c(
    "MS0109", "InvalidCreationTimestamp", E, "creationTimestamp is not an RFC 3339 time"
)
INVALID_VALUE = _c("MS0110", "InvalidValue", E, "a field value is malformed")
DUPLICATE_KEY = _c("MS0112", "DuplicateKey", E, "a YAML mapping repeats a key")
INVALID_MESH_CONFIG = _c(
    "MS0113", "InvalidMeshConfig", E, "the istio ConfigMap mesh config is invalid"
)
NAMESPACE_DEFAULTED = _c(
    "MS0114",
    "NamespaceDefaulted",
    INFO_,
    "metadata.namespace missing: the object goes to 'default'",
)
# Removed or unsupported APIs.
REMOVED_KIND = _c(
    "MS0201", "RemovedKind", E, "a kind Istio has removed; the message says what replaces it"
)
UNKNOWN_API_VERSION = _c(
    "MS0202", "UnknownApiVersion", E, "a known kind with an apiVersion Istio does not serve"
)
CUSTOM_UNSUPPORTED = _c(
    "MS0204",
    "CustomActionUnsupported",
    W,
    "AuthorizationPolicy CUSTOM action is not enforced by meshsec",
)
UNSUPPORTED_FIELD = _c(
    "MS0205", "UnsupportedField", W, "a valid Istio field meshsec accepts but does not enforce"
)
# Cross-resource semantics (analyzers).
MTLS_CONFLICT = _c(
    "MS0301",
    "MTLSPolicyConflict",
    E,
    "a DestinationRule's TLS mode conflicts with the server's mTLS mode",
)
DUPLICATE_NAMESPACE_POLICY = _c(
    "MS0302",
    "DuplicateNamespacePeerAuthentication",
    W,
    "more than one selector-less PeerAuthentication in a namespace; only the oldest applies",
)
ROOT_NAMESPACE_SELECTOR = _c(
    "MS0303",
    "RootNamespaceSelectorIgnored",
    W,
    "a PeerAuthentication with a selector in the root namespace is ignored",
)
NO_WORKLOADS_KNOWN = _c(
    "MS0304", "NoWorkloadsKnown", INFO_, "no workloads are known, so selectors were not checked"
)
DUPLICATE_TRAFFIC_POLICY_PORT = _c(
    "MS0305", "DuplicatePortLevelSetting", W, "portLevelSettings lists the same port twice"
)
WRONG_PORT_SPACE = _c(
    "MS0306",
    "ServicePortTargetPortMixup",
    W,
    "a Service port where a workload (target) port is expected, or the reverse",
)
FOREIGN_TRUST_DOMAIN = _c(
    "MS0307",
    "ForeignTrustDomain",
    W,
    "a principal or trustDomains value outside the mesh's trust domain and aliases",
)
SERVICE_ACCOUNT_NOT_FOUND = _c(
    "MS0308",
    "ServiceAccountNotFound",
    W,
    "a principal or serviceAccounts value names a ServiceAccount that does not exist",
)
# Istio analyzer codes (istio:pkg/config/analysis/msg/messages.yaml).
REFERENCED_RESOURCE_NOT_FOUND = _c(
    "IST0101", "ReferencedResourceNotFound", E, "a referenced resource does not exist"
)
NO_MATCHING_WORKLOADS = _c(
    "IST0127", "NoMatchingWorkloadsFound", W, "a policy's selector matches no workload"
)
NO_SERVER_CERT_VERIFICATION_DEST = _c(
    "IST0128",
    "NoServerCertificateVerificationDestinationLevel",
    W,
    "DestinationRule SIMPLE/MUTUAL TLS without caCertificates: the server is not verified",
)
NO_SERVER_CERT_VERIFICATION_PORT = _c(
    "IST0129",
    "NoServerCertificateVerificationPortLevel",
    W,
    "port-level SIMPLE/MUTUAL TLS without caCertificates: the server is not verified",
)

CATALOG: tuple[CodeInfo, ...] = tuple(
    sorted((v for v in dict(globals()).values() if isinstance(v, CodeInfo)), key=lambda c: c.code)
)
"""Every code meshsec emits, in code order."""
_BY_CODE = {c.code: c for c in CATALOG}


def lookup(code: str) -> CodeInfo:
    """The catalog entry for ``code`` (KeyError if unknown: a programming error)."""
    return _BY_CODE[code]


def make(
    info: CodeInfo,
    message: str,
    *,
    file: str = "",
    line: int = 0,
    path: str = "",
    resource: str = "",
    level: Level | None = None,
) -> Diagnostic:
    """Build a :class:`Diagnostic` for a catalog entry (``level`` overrides the default)."""
    return Diagnostic(
        code=info.code,
        level=level or info.level,
        message=message,
        file=file,
        line=line,
        path=path,
        resource=resource,
    )


def sort_diagnostics(diags: list[Diagnostic] | tuple[Diagnostic, ...]) -> tuple[Diagnostic, ...]:
    """Stable order for output: file, line, code, message."""
    return tuple(sorted(diags, key=lambda d: (d.file, d.line, d.code, d.path, d.message)))
