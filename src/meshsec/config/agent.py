"""Settings of the node agent (``meshsec agent run``), with Istio's pilot-agent env names.

Built only by :func:`meshsec.config.load.load_settings` (defaults < file < env < flags). Paths that
Istio writes relative to the working directory (``./var/run/secrets/...``, ``./etc/certs``) keep
that form, so the agent drops into an Istio pod spec unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings, parse_host_port, setting
from meshsec.core.identity import IdentityError, SpiffeId, TrustDomain

ISTIOD_ROOT_CERT = Path("./var/run/secrets/istio/root-cert.pem")
KUBERNETES_CA_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
MOUNTED_CERTS_DIR = Path("./etc/certs")
WORKLOAD_IDENTITY_DIR = Path("./var/run/secrets/workload-spiffe-uds")
# Istio: if all three files exist here at start, they are served (FILE_MOUNTED_CERTS) instead
# of calling a CA (istio-csr / cert-manager style credentials)
WORKLOAD_CREDENTIALS_DIR = Path("./var/run/secrets/workload-spiffe-credentials")
CREDENTIAL_FILES = ("cert-chain.pem", "key.pem", "root-cert.pem")
DEFAULT_TOKEN_FILE = Path("./var/run/secrets/tokens/istio-token")

CA_HEADER_PREFIX = "CA_HEADER_"
# gRPC metadata names: lower-case letters, digits, _ - . ; these ones the agent sets itself
_HEADER_NAME = re.compile(r"[0-9a-z_.-]+")
RESERVED_CA_HEADERS = ("authorization", "clusterid", "te", "content-type", "user-agent")
CERT_PROVIDERS = ("istiod", "kubernetes", "custom", "none")
RSA_KEY_SIZES = (2048, 3072, 4096)
ECC_CURVES = ("P256", "P384")


def parse_unix_socket_path(value: str) -> Path:
    """``SPIFFE_ENDPOINT_SOCKET`` form (``unix:///abs``, ``unix:/abs``) or a plain path."""
    text = value.strip()
    if text.startswith("unix://"):
        rest = text[len("unix://") :]
        if not rest.startswith("/"):
            raise ValueError(f"{value!r}: a unix socket URI must have no authority (unix:///path)")
        return Path(rest)
    if text.startswith("unix:"):
        return Path(text[len("unix:") :])
    if "://" in text:
        raise ValueError(f"{value!r}: only unix domain sockets are supported (unix:///path)")
    if not text:
        raise ValueError("empty socket path")
    return Path(text)


@dataclass(frozen=True)
class AgentSettings:
    ca_addr: str = setting(
        "istiod.istio-system.svc:15012", env="CA_ADDR", help="CA endpoint HOST:PORT"
    )
    ca_mtls_addr: str = setting(
        "",
        env="MESHSEC_CA_MTLS_ADDR",
        help="CA port for client-certificate renewal when no token is available",
    )
    ca_root: Path | None = setting(
        None,
        env="CA_ROOT_CA",
        help="root certificate file that verifies the CA server (default: by PILOT_CERT_PROVIDER)",
    )
    pilot_cert_provider: str = setting(
        "istiod",
        env="PILOT_CERT_PROVIDER",
        help="where the CA root comes from: istiod | kubernetes | custom",
    )
    istiod_san: str = setting(
        "istiod.istio-system.svc", env="ISTIOD_SAN", help="server name expected on the CA's cert"
    )
    token_file: Path | None = setting(
        DEFAULT_TOKEN_FILE,
        env="MESHSEC_TOKEN_FILE",
        help="service-account token, re-read on every CA call; none → client-cert renewal",
    )
    cluster_id: str = setting(
        "Kubernetes", env="ISTIO_META_CLUSTER_ID", help="sent as the clusterid header"
    )
    cert_signer: str = setting(
        "", env="ISTIO_META_CERT_SIGNER", help="CertSigner metadata sent with the CSR"
    )
    sds_socket: Path | None = setting(
        None,
        env="MESHSEC_SDS_SOCKET",
        help="Envoy SDS socket (default ./var/run/secrets/workload-spiffe-uds/<socket file>)",
    )
    workload_identity_socket_file: str = setting(
        "socket", env="WORKLOAD_IDENTITY_SOCKET_FILE", help="file name of the SDS socket"
    )
    workload_socket: Path | None = setting(
        WORKLOAD_IDENTITY_DIR / "spiffe.sock",
        env="SPIFFE_ENDPOINT_SOCKET",
        parse=parse_unix_socket_path,
        help="SPIFFE Workload API socket (unix:///path or a path)",
    )
    output_certs: Path | None = setting(
        None, env="OUTPUT_CERTS", help="directory to write cert-chain.pem, key.pem, root-cert.pem"
    )
    status: str = setting(
        "127.0.0.1:15020", env="MESHSEC_STATUS_ADDR", help="status HTTP server HOST:PORT"
    )
    trust_domain: str = setting("cluster.local", env="TRUST_DOMAIN", help="trust domain")
    pod_namespace: str = setting("default", env="POD_NAMESPACE", help="namespace for the CSR SAN")
    service_account: str = setting(
        "default", env="SERVICE_ACCOUNT", help="service account for the CSR SAN"
    )
    secret_ttl: timedelta = setting(
        timedelta(hours=24), env="SECRET_TTL", help="requested certificate lifetime"
    )
    secret_grace_period_ratio: float = setting(
        0.5, env="SECRET_GRACE_PERIOD_RATIO", help="renew when this fraction of life remains"
    )
    secret_grace_period_ratio_jitter: float = setting(
        0.01, env="SECRET_GRACE_PERIOD_RATIO_JITTER", help="random spread of the renewal point"
    )
    ecc_signature_algorithm: str = setting(
        "", env="ECC_SIGNATURE_ALGORITHM", help="ECDSA switches workload keys to EC"
    )
    ecc_curve: str = setting("P256", env="ECC_CURVE", help="P256 or P384")
    workload_rsa_key_size: int = setting(2048, env="WORKLOAD_RSA_KEY_SIZE", help="RSA key size")
    prov_cert: Path | None = setting(
        None, env="PROV_CERT", help="directory with a provisioning client cert for the CA"
    )
    file_mounted_certs: bool = setting(
        False, env="FILE_MOUNTED_CERTS", help="serve certs mounted at --mounted-certs-dir, no CA"
    )
    mounted_certs_dir: Path = setting(
        MOUNTED_CERTS_DIR, env="MESHSEC_MOUNTED_CERTS_DIR", help="directory of mounted certs"
    )
    file_debounce_duration: timedelta = setting(
        timedelta(milliseconds=100),
        env="FILE_DEBOUNCE_DURATION",
        help="poll interval / debounce of mounted cert files",
    )
    log_level: str = setting("info", env="MESHSEC_LOG_LEVEL", help="debug | info | warning")
    ca_headers: tuple[tuple[str, str], ...] = setting(
        (),
        parse=lambda text: parse_header_pairs(text),
        help="extra gRPC metadata on every CA call: env CA_HEADER_<NAME>=value (Istio), "
        "or name=value,name=value in the file",
    )

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.pilot_cert_provider not in CERT_PROVIDERS:
            problems.append(
                f"PILOT_CERT_PROVIDER {self.pilot_cert_provider!r} is not one of "
                + ", ".join(CERT_PROVIDERS)
            )
        if self.secret_ttl <= timedelta(0):
            problems.append("SECRET_TTL must be positive")
        if not 0.0 <= self.secret_grace_period_ratio <= 1.0:
            problems.append("SECRET_GRACE_PERIOD_RATIO must be between 0 and 1")
        if not 0.0 <= self.secret_grace_period_ratio_jitter <= 1.0:
            problems.append("SECRET_GRACE_PERIOD_RATIO_JITTER must be between 0 and 1")
        if self.ecc_signature_algorithm not in ("", "ECDSA"):
            problems.append("ECC_SIGNATURE_ALGORITHM must be empty or ECDSA")
        if self.ecc_curve not in ECC_CURVES:
            problems.append(f"ECC_CURVE {self.ecc_curve!r} is not one of P256, P384")
        if self.workload_rsa_key_size not in RSA_KEY_SIZES:
            problems.append(
                f"WORKLOAD_RSA_KEY_SIZE {self.workload_rsa_key_size} is not 2048/3072/4096"
            )
        problems.extend(check_ca_headers(self.ca_headers))
        if self.prov_cert is not None and self.file_mounted_certs:
            problems.append("PROV_CERT and FILE_MOUNTED_CERTS cannot be used together")
        try:
            SpiffeId.for_service_account(
                TrustDomain(self.trust_domain), self.pod_namespace, self.service_account
            )
        except IdentityError as exc:
            problems.append(f"workload identity: {exc}")
        addresses = [("--ca-addr", self.ca_addr, False), ("--status", self.status, True)]
        if self.ca_mtls_addr:
            addresses.append(("--ca-mtls-addr", self.ca_mtls_addr, False))
        for label, addr, listen in addresses:
            try:
                parse_host_port(addr, what=label, listen=listen)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def identity(self) -> SpiffeId:
        """The informational SAN put in the CSR (the CA decides the real identity)."""
        return SpiffeId.for_service_account(
            TrustDomain(self.trust_domain), self.pod_namespace, self.service_account
        )

    @property
    def sds_socket_path(self) -> Path:
        if self.sds_socket is not None:
            return self.sds_socket
        return WORKLOAD_IDENTITY_DIR / self.workload_identity_socket_file

    @property
    def ca_root_path(self) -> Path:
        """The file that verifies the CA's server certificate, chosen like PILOT_CERT_PROVIDER."""
        if self.ca_root is not None:
            return self.ca_root
        if self.pilot_cert_provider == "kubernetes":
            return KUBERNETES_CA_FILE
        if self.pilot_cert_provider == "custom":
            return MOUNTED_CERTS_DIR / "root-cert.pem"
        if self.pilot_cert_provider == "none":
            raise ValueError("PILOT_CERT_PROVIDER=none: give --ca-root to verify the CA")
        return ISTIOD_ROOT_CERT


def parse_ca_headers(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Istio's ``CA_HEADER_<NAME>=value`` variables → ``(("<name>", "value"), ...)``, sorted
    (gRPC metadata names are lower case). Checked by :func:`check_ca_headers`."""
    return tuple(
        sorted(
            (key[len(CA_HEADER_PREFIX) :].lower(), value)
            for key, value in env.items()
            if key.startswith(CA_HEADER_PREFIX)
        )
    )


def parse_header_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """``name=value,name=value`` → ``(("name", "value"), ...)`` (names lower-cased)."""
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{item.strip()!r} is not name=value")
        pairs.append((name.strip().lower(), value.strip()))
    return tuple(sorted(pairs))


def check_ca_headers(headers: tuple[tuple[str, str], ...]) -> list[str]:
    problems = []
    for name, value in headers:
        where = f"{CA_HEADER_PREFIX}{name.upper()}"
        if not _HEADER_NAME.fullmatch(name):
            problems.append(f"{where}: {name!r} is not a gRPC metadata name ([0-9a-z_.-]+)")
        elif name.startswith("grpc-") or name in RESERVED_CA_HEADERS:
            problems.append(f"{where}: {name!r} is set by the agent itself")
        elif not all(0x20 <= ord(c) <= 0x7E for c in value):
            problems.append(f"{where}: the value must be printable ASCII (no control characters)")
    return problems


def load_agent_settings(
    *, flags: Mapping[str, Any], file: Path | None, env: Mapping[str, str] | None = None
) -> AgentSettings:
    """:func:`load_settings` for the agent, plus what one field per setting cannot express:
    the ``CA_HEADER_*`` prefix variables, and Istio's switch to serving
    ``./var/run/secrets/workload-spiffe-credentials/`` (``FILE_MOUNTED_CERTS``) when its three
    files exist at start. ``env`` defaults to ``os.environ``."""
    environ: Mapping[str, str] = os.environ if env is None else env
    settings = load_settings(AgentSettings, flags=flags, env=environ, file=file)
    changes: dict[str, Any] = {}
    headers = parse_ca_headers(environ)
    if headers:
        changes["ca_headers"] = headers
    if not settings.file_mounted_certs and has_workload_credentials(WORKLOAD_CREDENTIALS_DIR):
        changes.update(file_mounted_certs=True, mounted_certs_dir=WORKLOAD_CREDENTIALS_DIR)
    if not changes:
        return settings
    try:
        return replace(settings, **changes)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None


def has_workload_credentials(directory: Path) -> bool:
    """All of ``cert-chain.pem``, ``key.pem``, ``root-cert.pem`` exist in ``directory``."""
    return all((directory / name).is_file() for name in CREDENTIAL_FILES)
