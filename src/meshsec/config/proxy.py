"""Settings of the sidecar proxy (``meshsec proxy run``).

Built only by :func:`meshsec.config.load.load_settings` (defaults < file < env < flags). Listener
and endpoint specs are strings (flags, comma-separated env, or YAML lists) parsed here into typed
specs, each error naming the spec and what is wrong:

* ``--inbound PORT:APPPORT[:MODE][:http|tcp]`` — listen on PORT for the application on APPPORT;
  MODE is STRICT, PERMISSIVE or DISABLE (PeerAuthentication), required without
  ``--config-dir`` and refused with it (the mode then comes from the effective
  PeerAuthentication of the port, live); ``http`` enables per-request authorization and XFCC
  (with ``--config-dir`` and neither ``http`` nor ``tcp`` written: the protocol the workload
  declares for the port).
* ``--outbound LISTENPORT:HOST:PORT`` — a local TCP port mapped to HOST:PORT through the mesh.
* ``--endpoint HOST:PORT=ADDRESS:PORT[#SAN...]`` — a static registry entry: where HOST:PORT runs
  and the SPIFFE IDs it runs as (secure naming); with SANs the client TLS is ISTIO_MUTUAL, without
  them plaintext (DISABLE). Repeat for several endpoints.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from meshsec.config.agent import parse_unix_socket_path
from meshsec.config.load import parse_host_port, parse_port_number, setting
from meshsec.core.identity import IdentityError, SpiffeId, TrustDomain

MODES = ("STRICT", "PERMISSIVE", "DISABLE")


@dataclass(frozen=True)
class InboundSpec:
    port: int
    app_port: int
    mode: str | None  # None: from PeerAuthentication (--config-dir)
    http: bool
    protocol_given: bool = False  # ":http"/":tcp" written (else the workload's declaration)


@dataclass(frozen=True)
class OutboundSpec:
    listen_port: int
    host: str
    port: int


@dataclass(frozen=True)
class EndpointSpec:
    host: str
    port: int
    address: str
    address_port: int
    sans: tuple[str, ...]


def _port(text: str, spec: str, what: str) -> int:
    port = parse_port_number(text)
    if port is None:
        raise ValueError(f"{spec[:80]!r}: {what} {text[:20]!r} is not a port number (0-65535)")
    return port


def parse_inbound_spec(spec: str) -> InboundSpec:
    """``PORT:APPPORT[:MODE][:http|tcp]``."""
    parts = spec.split(":")
    if len(parts) not in (2, 3, 4):
        raise ValueError(f"{spec!r}: expected PORT:APPPORT[:MODE][:http|tcp]")
    mode: str | None = None
    rest = parts[2:]
    if rest and rest[0].lower() not in ("http", "tcp"):
        mode = rest.pop(0).upper()
        if mode not in MODES:
            raise ValueError(f"{spec!r}: mode {parts[2]!r} is not one of {', '.join(MODES)}")
    if rest and rest[0].lower() not in ("http", "tcp"):
        raise ValueError(f"{spec!r}: protocol {rest[0]!r} must be http or tcp")
    return InboundSpec(
        _port(parts[0], spec, "port"),
        _port(parts[1], spec, "application port"),
        mode,
        bool(rest) and rest[0].lower() == "http",
        bool(rest),
    )


def parse_workload_ref(ref: str) -> tuple[str, str]:
    """``NAME.NAMESPACE`` -> (name, namespace)."""
    name, dot, namespace = ref.partition(".")
    if not dot or not name or not namespace or "." in namespace:
        raise ValueError(f"{ref[:80]!r} is not NAME.NAMESPACE")
    return name, namespace


def parse_outbound_spec(spec: str) -> OutboundSpec:
    listen, sep, rest = spec.partition(":")
    host, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or not host:
        raise ValueError(f"{spec!r}: expected LISTENPORT:HOST:PORT")
    return OutboundSpec(_port(listen, spec, "listen port"), host, _port(port, spec, "port"))


def parse_endpoint_spec(spec: str) -> EndpointSpec:
    service, eq, rest = spec.partition("=")
    if not eq:
        raise ValueError(f"{spec!r}: expected HOST:PORT=ADDRESS:PORT[#SPIFFE-ID...]")
    host, sep, port = service.rpartition(":")
    target, *sans = rest.split("#")
    address, sep2, address_port = target.rpartition(":")
    if not sep or not host or not sep2 or not address:
        raise ValueError(f"{spec!r}: expected HOST:PORT=ADDRESS:PORT[#SPIFFE-ID...]")
    for san in sans:
        try:
            SpiffeId.parse(san)
        except IdentityError as exc:
            raise ValueError(f"{spec!r}: {exc}") from None
    return EndpointSpec(
        host,
        _port(port, spec, "service port"),
        address.strip("[]"),
        _port(address_port, spec, "endpoint port"),
        tuple(sans),
    )


@dataclass(frozen=True)
class ProxySettings:
    cert_dir: Path | None = setting(
        None,
        env="MESHSEC_PROXY_CERT_DIR",
        help="directory with cert-chain.pem, key.pem, root-cert.pem (the agent's file output); "
        "re-read when the files change",
    )
    sds_socket: Path | None = setting(
        None,
        env="MESHSEC_PROXY_SDS_SOCKET",
        parse=parse_unix_socket_path,
        help="the agent's Envoy SDS socket (unix:///path or a path): 'default' + 'ROOTCA' "
        "streamed, rotations applied as they come",
    )
    config_dir: Path | None = setting(
        None,
        env="MESHSEC_PROXY_CONFIG_DIR",
        help="directory (or file) of Istio YAML: PeerAuthentication, AuthorizationPolicy, "
        "DestinationRule, Services, Namespaces, Workloads; watched, edits applied live",
    )
    workload: str = setting(
        "",
        env="MESHSEC_PROXY_WORKLOAD",
        help="with --config-dir: this sidecar's workload, NAME.NAMESPACE (a Workload or Pod "
        "there: labels and service account)",
    )
    config_poll_interval: timedelta = setting(
        timedelta(seconds=1),
        env="MESHSEC_PROXY_CONFIG_POLL_INTERVAL",
        help="how often --config-dir is re-read (an edit applies when two reads agree)",
    )
    concurrency: int = setting(
        1,
        env="MESHSEC_PROXY_CONCURRENCY",
        help="worker processes sharing the listeners; 0 = one per CPU",
    )
    inbound: tuple[str, ...] = setting(
        (),
        env="MESHSEC_PROXY_INBOUND",
        help="inbound listeners PORT:APPPORT[:MODE][:http] (MODE only without --config-dir)",
    )
    outbound: tuple[str, ...] = setting(
        (), env="MESHSEC_PROXY_OUTBOUND", help="outbound TCP mappings LISTENPORT:HOST:PORT"
    )
    endpoints: tuple[str, ...] = setting(
        (),
        env="MESHSEC_PROXY_ENDPOINTS",
        help="static registry HOST:PORT=ADDRESS:PORT[#SPIFFE-ID...]",
    )
    http_proxy_port: int | None = setting(
        None, env="MESHSEC_PROXY_HTTP_PORT", help="HTTP forward-proxy port for HTTP_PROXY clients"
    )
    outbound_host: str = setting(
        "127.0.0.1", env="MESHSEC_PROXY_OUTBOUND_HOST", help="address outbound listeners bind"
    )
    inbound_host: str = setting(
        "0.0.0.0",  # noqa: S104 - the sidecar serves the pod's peers
        env="MESHSEC_PROXY_INBOUND_HOST",
        help="address inbound listeners bind",
    )
    app_host: str = setting(
        "127.0.0.1", env="MESHSEC_PROXY_APP_HOST", help="where the application listens"
    )
    admin_addr: str = setting(
        "127.0.0.1:15000",
        env="MESHSEC_PROXY_ADMIN_ADDR",
        help="admin HOST:PORT (/ready, /config_dump, /stats/prometheus); empty disables it",
    )
    trust_domain: str = setting(
        "cluster.local", env="TRUST_DOMAIN", help="mesh trust domain (MeshConfig trustDomain)"
    )
    trust_domain_aliases: tuple[str, ...] = setting(
        (), env="TRUST_DOMAIN_ALIASES", help="trust domain aliases (MeshConfig trustDomainAliases)"
    )
    skip_validate_trust_domain: bool = setting(
        False,
        env="PILOT_SKIP_VALIDATE_TRUST_DOMAIN",
        help="accept inbound peers from any trust domain the bundle verifies",
    )
    min_tls_version: str = setting(
        "1.2", env="MESHSEC_MIN_TLS_VERSION", help="meshMTLS minProtocolVersion: 1.2 or 1.3"
    )
    handshake_timeout: timedelta = setting(
        timedelta(seconds=10), env="MESHSEC_PROXY_HANDSHAKE_TIMEOUT", help="TLS handshake limit"
    )
    connect_timeout: timedelta = setting(
        timedelta(seconds=10), env="MESHSEC_PROXY_CONNECT_TIMEOUT", help="TCP connect limit"
    )
    idle_timeout: timedelta = setting(
        timedelta(hours=1),
        env="MESHSEC_PROXY_IDLE_TIMEOUT",
        help="close connections idle this long",
    )
    sniff_timeout: timedelta = setting(
        timedelta(seconds=5),
        env="MESHSEC_PROXY_SNIFF_TIMEOUT",
        help="PERMISSIVE: a client silent this long is treated as plaintext",
    )
    drain_duration: timedelta = setting(
        timedelta(seconds=5),
        env="TERMINATION_DRAIN_DURATION_SECONDS",
        help="on SIGTERM, how long open connections may finish before they are closed",
    )
    cert_watch_interval: timedelta = setting(
        timedelta(seconds=1),
        env="MESHSEC_PROXY_CERT_WATCH_INTERVAL",
        help="how often --cert-dir is checked for new files",
    )
    buffer_bytes: int = setting(
        64 * 1024,
        env="MESHSEC_PROXY_BUFFER_BYTES",
        help="per-direction write buffer high-water mark (backpressure above it)",
    )
    log_level: str = setting("info", env="MESHSEC_LOG_LEVEL", help="debug, info, warning, error")

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name, flag, parse in (
            ("inbound", "--inbound", parse_inbound_spec),
            ("outbound", "--outbound", parse_outbound_spec),
            ("endpoints", "--endpoint", parse_endpoint_spec),
        ):
            for spec in getattr(self, name):
                try:
                    parse(spec)
                except ValueError as exc:
                    problems.append(f"{flag}: {exc}")
        try:
            TrustDomain(self.trust_domain)
            for alias in self.trust_domain_aliases:
                TrustDomain(alias)
        except IdentityError as exc:
            problems.append(f"--trust-domain: {exc}")
        if self.min_tls_version not in ("1.2", "1.3"):
            problems.append(f"--min-tls-version: {self.min_tls_version!r} is not 1.2 or 1.3")
        if self.cert_dir is not None and self.sds_socket is not None:
            problems.append("--cert-dir and --sds-socket: give one certificate source, not both")
        if self.admin_addr:
            try:
                parse_host_port(self.admin_addr, what="--admin-addr")
            except ValueError as exc:
                problems.append(str(exc))
        problems.extend(self._policy_problems())
        if self.concurrency < 0 or self.concurrency > 256:
            problems.append(f"--concurrency: {self.concurrency} is not 0-256")
        elif self.concurrency != 1:
            problems.extend(self._shared_port_problems())
        if self.buffer_bytes < 4096:
            problems.append("--buffer-bytes: at least 4096")
        if problems:
            raise ValueError("; ".join(problems))

    def _shared_port_problems(self) -> list[str]:
        """Workers share listeners by port: port 0 would give each worker its own port."""
        zero = [f"--inbound {s!r}" for s in self.inbound if s.split(":", 1)[0] == "0"]
        zero += [f"--outbound {s!r}" for s in self.outbound if s.split(":", 1)[0] == "0"]
        if self.http_proxy_port == 0:
            zero.append("--http-proxy-port 0")
        return [
            f"--concurrency {self.concurrency}: {z} listens on port 0; workers share listeners "
            "by port, give it a number"
            for z in zero
        ]

    def _policy_problems(self) -> list[str]:
        problems: list[str] = []
        specs = []
        for text in self.inbound:
            with contextlib.suppress(ValueError):  # reported by __post_init__
                specs.append((text, parse_inbound_spec(text)))
        if self.config_dir is None:
            if self.workload:
                problems.append("--workload: only with --config-dir")
            problems.extend(
                f"--inbound: {text!r}: no MODE (STRICT, PERMISSIVE or DISABLE); without "
                "--config-dir each port needs one"
                for text, spec in specs
                if spec.mode is None
            )
            return problems
        if not self.workload:
            problems.append("--config-dir: --workload NAME.NAMESPACE is required with it")
        else:
            try:
                parse_workload_ref(self.workload)
            except ValueError as exc:
                problems.append(f"--workload: {exc}")
        problems.extend(
            f"--inbound: {text!r}: with --config-dir the mode comes from the effective "
            f"PeerAuthentication; drop ':{spec.mode}' (pin a port with a workload-level "
            "PeerAuthentication's portLevelMtls)"
            for text, spec in specs
            if spec.mode is not None
        )
        if self.endpoints:
            problems.append(
                "--endpoint: not with --config-dir (the registry comes from its Services and "
                "Workloads annotated meshsec.io/address)"
            )
        return problems

    @property
    def inbound_specs(self) -> tuple[InboundSpec, ...]:
        return tuple(parse_inbound_spec(s) for s in self.inbound)

    @property
    def outbound_specs(self) -> tuple[OutboundSpec, ...]:
        return tuple(parse_outbound_spec(s) for s in self.outbound)

    @property
    def listen_addresses(self) -> set[tuple[str, int]]:
        """Every (host, port) the flags ask the proxy to listen on (not the admin port, nor
        ports that only a --config-dir Workload declares)."""
        addresses = {(self.inbound_host, spec.port) for spec in self.inbound_specs}
        addresses |= {(self.outbound_host, spec.listen_port) for spec in self.outbound_specs}
        if self.http_proxy_port:
            addresses.add((self.outbound_host, self.http_proxy_port))
        return addresses

    @property
    def endpoint_specs(self) -> tuple[EndpointSpec, ...]:
        return tuple(parse_endpoint_spec(s) for s in self.endpoints)
