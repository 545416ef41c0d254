"""Settings of the CA process (``meshsec ca serve``).

Environment variables use Istio's names where Istio has the setting (istiod's CA:
``DEFAULT_WORKLOAD_CERT_TTL``, ``MAX_WORKLOAD_CERT_TTL``, ``TOKEN_AUDIENCES``, ``ROOT_CA_DIR``,
``CITADEL_SELF_SIGNED_CA_CERT_TTL``, ``CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE``, ``TRUST_DOMAIN``,
``CLUSTER_ID``, ``KUBECONFIG``); meshsec's own knobs are ``MESHSEC_CA_*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from meshsec.config.load import parse_host_port, setting

CA_KEY_TYPES = ("ec-p256", "ec-p384", "rsa")


def parse_cluster_alias(value: str) -> tuple[str, str]:
    """``ALIAS=CLUSTER`` -> (alias, cluster)."""
    alias, sep, cluster = value.partition("=")
    if not sep or not alias.strip() or not cluster.strip():
        raise ValueError(f"cluster alias {value!r} must be ALIAS=CLUSTER")
    return alias.strip(), cluster.strip()


@dataclass(frozen=True)
class CaSettings:
    data_dir: Path = setting(
        env="MESHSEC_CA_DATA_DIR",
        help="directory holding the self-signed CA material, the root bundle and the ledger",
    )
    listen: str = setting(
        "127.0.0.1:15012", env="MESHSEC_CA_LISTEN", help="gRPC address (Istio's secure :15012)"
    )
    mtls_listen: str = setting(
        "127.0.0.1:15013",
        env="MESHSEC_CA_MTLS_LISTEN",
        help="gRPC address requiring a mesh client certificate (renewal); empty disables",
    )
    monitoring: str = setting(
        "127.0.0.1:15014", env="MESHSEC_CA_MONITORING", help="HTTP address serving /metrics"
    )
    clusters: tuple[str, ...] = setting(
        (),
        env="MESHSEC_CA_CLUSTERS",
        help="cluster directories whose service-account tokens are trusted; the first is local",
    )
    cacerts: Path | None = setting(
        None,
        env="ROOT_CA_DIR",
        help="plugged-in CA directory (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)",
    )
    trust_domain: str = setting("cluster.local", env="TRUST_DOMAIN", help="mesh trust domain")
    plaintext: bool = setting(
        False, env="MESHSEC_CA_PLAINTEXT", help="serve gRPC without TLS (debugging only)"
    )
    default_workload_cert_ttl: timedelta = setting(
        timedelta(hours=24),
        env="DEFAULT_WORKLOAD_CERT_TTL",
        help="TTL of workload certificates when the request asks for none (<= 0)",
    )
    max_workload_cert_ttl: timedelta = setting(
        timedelta(days=90),
        env="MAX_WORKLOAD_CERT_TTL",
        help="largest TTL a request may ask for; above it the request is refused",
    )
    token_audiences: tuple[str, ...] = setting(
        ("istio-ca",),
        env="TOKEN_AUDIENCES",
        help="a token is accepted if its aud contains one of these (comma separated)",
    )
    self_signed_ca_cert_ttl: timedelta = setting(
        timedelta(days=3650),
        env="CITADEL_SELF_SIGNED_CA_CERT_TTL",
        help="lifetime of a newly generated self-signed root",
    )
    ca_key_type: str = setting(
        "ec-p256",
        env="MESHSEC_CA_KEY_TYPE",
        help="key of a newly generated self-signed root: ec-p256, ec-p384 or rsa",
    )
    self_signed_ca_rsa_key_size: int = setting(
        2048,
        env="CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE",
        help="RSA key size of a newly generated self-signed root (with ca-key-type rsa)",
    )
    serving_cert_ttl: timedelta = setting(
        timedelta(days=90),
        env="MESHSEC_CA_SERVING_CERT_TTL",
        help="lifetime of the CA's own TLS serving certificate (re-issued at every start)",
    )
    kubeconfig: Path | None = setting(
        None,
        env="KUBECONFIG",
        help="kubeconfig of a Kubernetes cluster whose tokens are checked with TokenReview",
    )
    cluster_id: str = setting(
        "Kubernetes",
        env="CLUSTER_ID",
        help="cluster id of the --kubeconfig cluster (local when no --cluster is given)",
    )
    workers: int = setting(
        0, env="MESHSEC_CA_WORKERS", help="server processes sharing the port (0 = one per core)"
    )
    max_in_flight: int = setting(
        128,
        env="MESHSEC_CA_MAX_IN_FLIGHT",
        help="requests one worker handles at once (authenticate, sign, ledger commit); a request "
        "beyond that is answered RESOURCE_EXHAUSTED at once, not queued",
    )
    max_request_bytes: int = setting(
        64 * 1024,
        env="MESHSEC_CA_MAX_REQUEST_BYTES",
        help="largest request message handled; a bigger one is answered INVALID_ARGUMENT, one "
        "above gRPC's own limit (4x this, at least 1 MiB) RESOURCE_EXHAUSTED by gRPC",
    )
    token_clock_skew: timedelta = setting(
        timedelta(seconds=30),
        env="MESHSEC_CA_TOKEN_CLOCK_SKEW",
        help="leeway when checking a token's exp / nbf / iat",
    )
    remote_secrets: Path | None = setting(
        None,
        env="MESHSEC_CA_REMOTE_SECRETS",
        help="directory of Istio remote secrets (create-remote-secret); polled, one file each",
    )
    remote_secrets_poll: timedelta = setting(
        timedelta(seconds=1),
        env="MESHSEC_CA_REMOTE_SECRETS_POLL",
        help="how often the remote secrets directory is re-read",
    )
    cluster_aliases: tuple[str, ...] = setting(
        (),
        env="MESHSEC_CA_CLUSTER_ALIASES",
        help="Istio clusterAliases: ALIAS=CLUSTER pairs (comma separated) for renamed clusters",
    )
    token_review_timeout: timedelta = setting(
        timedelta(seconds=5),
        env="MESHSEC_CA_TOKEN_REVIEW_TIMEOUT",
        help="timeout of one TokenReview call to a remote cluster's API server",
    )
    log_level: str = setting("info", env="MESHSEC_LOG_LEVEL", help="debug, info, warning, error")

    @property
    def alias_map(self) -> dict[str, str]:
        """``cluster_aliases`` as alias -> cluster id."""
        return dict(parse_cluster_alias(a) for a in self.cluster_aliases)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("listen", "monitoring", "mtls_listen"):
            if name == "mtls_listen" and not self.mtls_listen:
                continue
            try:
                parse_host_port(getattr(self, name), what=name)
            except ValueError as exc:
                problems.append(str(exc))
        if self.default_workload_cert_ttl <= timedelta(0):
            problems.append("DEFAULT_WORKLOAD_CERT_TTL must be positive")
        if self.max_workload_cert_ttl < self.default_workload_cert_ttl:
            problems.append(
                f"MAX_WORKLOAD_CERT_TTL ({self.max_workload_cert_ttl}) is below "
                f"DEFAULT_WORKLOAD_CERT_TTL ({self.default_workload_cert_ttl})"
            )
        if self.ca_key_type not in CA_KEY_TYPES:
            problems.append(f"ca-key-type {self.ca_key_type!r} is not one of {CA_KEY_TYPES}")
        if self.self_signed_ca_rsa_key_size not in (2048, 3072, 4096):
            problems.append("CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE must be 2048, 3072 or 4096")
        if not self.token_audiences:
            problems.append("TOKEN_AUDIENCES must name at least one audience")
        if self.workers < 0 or self.max_in_flight < 1 or self.max_request_bytes < 1024:
            problems.append("workers >= 0, max-in-flight >= 1, max-request-bytes >= 1024")
        for alias in self.cluster_aliases:
            try:
                parse_cluster_alias(alias)
            except ValueError as exc:
                problems.append(str(exc))
        if self.remote_secrets_poll <= timedelta(0) or self.token_review_timeout <= timedelta(0):
            problems.append("remote-secrets-poll and token-review-timeout must be positive")
        if problems:
            raise ValueError("; ".join(problems))
