"""``meshsec cluster init | serve | kubeconfig``: local stand-ins for Kubernetes clusters."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from meshsec.cluster import init_cluster_dir
from meshsec.config.errors import ConfigError

cluster_app = typer.Typer(
    help="Local stand-ins for Kubernetes clusters (token issuer, JWKS, TokenReview API).",
    no_args_is_help=True,
)


@cluster_app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="directory to create the cluster in")],
    name: Annotated[
        str, typer.Option("--name", help="cluster id (what the clusterid header names)")
    ],
    algorithm: Annotated[
        str, typer.Option("--algorithm", help="token signing: RS256 or ES256")
    ] = "RS256",
    issuer: Annotated[str | None, typer.Option("--issuer", help="issuer URL (iss claim)")] = None,
) -> None:
    """Create a signing key (0600), an issuer URL, a JWKS and cluster.yaml in DIR."""
    signer = init_cluster_dir(
        directory, name=name, now=datetime.now(UTC), algorithm=algorithm, issuer=issuer
    )
    typer.echo(
        f"cluster {signer.trust.name} created in {directory}\n"
        f"  issuer    {signer.trust.issuer}\n"
        f"  key id    {signer.kid} ({signer.algorithm})\n"
        f"  jwks      {directory / 'jwks.json'}\n"
        f"  API CA    {directory / 'ca.crt'} (serve the API: meshsec cluster serve {directory})\n"
        f"next: meshsec token mint --cluster {directory} --namespace default "
        "--service-account default"
    )


@cluster_app.command("serve")
def serve(
    directory: Annotated[Path, typer.Argument(help="the cluster directory (cluster init)")],
    listen: Annotated[
        str, typer.Option("--listen", help="HTTPS HOST:PORT (port 0 = any free port)")
    ] = "127.0.0.1:6443",
    tls_san: Annotated[
        list[str] | None,
        typer.Option("--tls-san", help="extra DNS name / IP for the serving certificate"),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning")] = "info",
) -> None:
    """Serve the cluster's Kubernetes API subset (TokenReview, OIDC discovery, JWKS) over HTTPS."""
    import signal
    import threading

    from meshsec.cluster.apiserver import ClusterApiServer
    from meshsec.config.load import parse_host_port
    from meshsec.runtime.log import setup_logging

    try:
        host, port = parse_host_port(listen, what="--listen")
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    setup_logging(log_level)
    server = ClusterApiServer(directory, listen=(host, port), tls_sans=tuple(tls_san or ()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        typer.echo(
            f"cluster {server.trust.name} API server ready: {server.url} "
            f"(issuer {server.trust.issuer}; CA {directory / 'ca.crt'})",
        )
        sys.stdout.flush()
        stop.wait()
    finally:
        server.stop()


@cluster_app.command("kubeconfig")
def kubeconfig(
    directory: Annotated[Path, typer.Argument(help="the cluster directory")],
    service_account: Annotated[
        str,
        typer.Option("--service-account", help="NAMESPACE/NAME the token is for"),
    ] = "istio-system/istiod",
    server: Annotated[
        str | None, typer.Option("--server", help="API server URL (default: the running one)")
    ] = None,
    ttl: Annotated[str, typer.Option("--token-ttl", help="token lifetime")] = "8760h",
) -> None:
    """Print a kubeconfig for the cluster's API server (istiod's own cluster: --kubeconfig)."""
    from meshsec.cluster import load_cluster_signer
    from meshsec.cluster.kubeconfig import mint_account_kubeconfig, render_yaml
    from meshsec.config.load import parse_duration

    if service_account.count("/") != 1:
        raise ConfigError([f"--service-account {service_account!r} must be NAMESPACE/NAME"])
    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        raise ConfigError([f"--token-ttl: {exc}"]) from None
    signer = load_cluster_signer(directory)
    config = mint_account_kubeconfig(
        signer,
        signer.trust.name,
        server=server,
        now=datetime.now(UTC),
        account=service_account,
        ttl=lifetime,
    )
    typer.echo(render_yaml(config), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
