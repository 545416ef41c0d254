"""``meshsec proxy run``: the mTLS sidecar (Envoy's role in the mesh).

Every flag also has an environment variable (see ``meshsec.config.proxy``); flags win over the
environment, which wins over the settings file (``--config FILE``, as for every meshsec
process). Certificates come from the agent's SDS socket (``--sds-socket``) or from ``--cert-dir``
(the agent's ``--output-certs`` directory or Istio's mounted ``/etc/certs``), re-read when they
change. Policy: static (``--inbound PORT:APPPORT:MODE``, ``--endpoint``, no authorization) or
from a watched directory of Istio YAML (``--config-dir DIR --workload NAME.NAMESPACE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from meshsec.config.load import load_settings
from meshsec.config.proxy import ProxySettings

proxy_app = typer.Typer(
    help="The mTLS sidecar: PeerAuthentication modes, AuthorizationPolicy, outbound mTLS with "
    "secure naming.",
    no_args_is_help=True,
)


@proxy_app.command("run")
def run(
    cert_dir: Annotated[
        Path | None,
        typer.Option(
            "--cert-dir",
            help="cert-chain.pem, key.pem, root-cert.pem; watched (env MESHSEC_PROXY_CERT_DIR)",
        ),
    ] = None,
    sds_socket: Annotated[
        str | None,
        typer.Option(
            "--sds-socket", help="agent SDS socket, unix:///path (env MESHSEC_PROXY_SDS_SOCKET)"
        ),
    ] = None,
    config_dir: Annotated[
        Path | None,
        typer.Option(
            "--config-dir",
            help="Istio YAML (PeerAuthentication, AuthorizationPolicy, DestinationRule, Services, "
            "Workloads); watched, edits applied live (env MESHSEC_PROXY_CONFIG_DIR)",
        ),
    ] = None,
    workload: Annotated[
        str | None,
        typer.Option(
            "--workload",
            help="with --config-dir: this sidecar's workload NAME.NAMESPACE "
            "(env MESHSEC_PROXY_WORKLOAD)",
        ),
    ] = None,
    inbound: Annotated[
        list[str] | None,
        typer.Option(
            "--inbound",
            help="PORT:APPPORT[:STRICT|PERMISSIVE|DISABLE][:http], repeatable; "
            "no MODE with --config-dir (PeerAuthentication decides)",
        ),
    ] = None,
    outbound: Annotated[
        list[str] | None,
        typer.Option("--outbound", help="LISTENPORT:HOST:PORT TCP mapping, repeatable"),
    ] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint",
            help="HOST:PORT=ADDRESS:PORT#SPIFFE-ID... registry entry (IDs optional), repeatable",
        ),
    ] = None,
    http_proxy_port: Annotated[
        int | None,
        typer.Option("--http-proxy-port", help="HTTP forward proxy (env MESHSEC_PROXY_HTTP_PORT)"),
    ] = None,
    admin_addr: Annotated[
        str | None,
        typer.Option(
            "--admin-addr", "--admin", help="admin HOST:PORT (env MESHSEC_PROXY_ADMIN_ADDR)"
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            help="worker processes sharing the listeners; 0 = one per CPU "
            "(env MESHSEC_PROXY_CONCURRENCY)",
        ),
    ] = None,
    trust_domain: Annotated[
        str | None, typer.Option("--trust-domain", help="mesh trust domain (env TRUST_DOMAIN)")
    ] = None,
    trust_domain_alias: Annotated[
        list[str] | None,
        typer.Option("--trust-domain-alias", help="trust domain alias, repeatable"),
    ] = None,
    idle_timeout: Annotated[
        str | None, typer.Option("--idle-timeout", help="e.g. 1h (env MESHSEC_PROXY_IDLE_TIMEOUT)")
    ] = None,
    drain_duration: Annotated[
        str | None,
        typer.Option("--drain-duration", help="e.g. 5s (env TERMINATION_DRAIN_DURATION_SECONDS)"),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="env MESHSEC_LOG_LEVEL")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="settings file (YAML)")] = None,
) -> None:
    """Serve inbound listeners in front of the application and outbound listeners for it.

    Runs until SIGTERM / SIGINT, then drains open connections for --drain-duration.
    """
    from meshsec.proxy.process import run_proxy
    from meshsec.runtime.log import setup_logging

    flags: dict[str, Any] = {
        "cert_dir": cert_dir,
        "sds_socket": sds_socket,
        "config_dir": config_dir,
        "workload": workload,
        "concurrency": concurrency,
        "inbound": tuple(inbound) if inbound else None,
        "outbound": tuple(outbound) if outbound else None,
        "endpoints": tuple(endpoint) if endpoint else None,
        "http_proxy_port": http_proxy_port,
        "admin_addr": admin_addr,
        "trust_domain": trust_domain,
        "trust_domain_aliases": tuple(trust_domain_alias) if trust_domain_alias else None,
        "idle_timeout": idle_timeout,
        "drain_duration": drain_duration,
        "log_level": log_level,
    }
    settings = load_settings(ProxySettings, flags=flags, file=config)
    setup_logging(settings.log_level)
    raise typer.Exit(run_proxy(settings))


def register(app: typer.Typer) -> None:
    app.add_typer(proxy_app, name="proxy")
