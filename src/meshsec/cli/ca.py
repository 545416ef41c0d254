"""``meshsec ca serve | root | issued``: the certificate authority."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meshsec.config.ca import CaSettings
from meshsec.config.load import load_settings

ca_app = typer.Typer(help="The certificate authority (istiod's CA).", no_args_is_help=True)


@ca_app.command("serve")
def serve(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="CA state: root, ledger")],
    listen: Annotated[
        str | None, typer.Option("--listen", help="gRPC HOST:PORT (default 127.0.0.1:15012)")
    ] = None,
    mtls_listen: Annotated[
        str | None,
        typer.Option(
            "--mtls-listen",
            help="HOST:PORT for client-certificate callers (default 127.0.0.1:15013)",
        ),
    ] = None,
    monitoring: Annotated[
        str | None, typer.Option("--monitoring", help="metrics HOST:PORT (default 127.0.0.1:15014)")
    ] = None,
    cluster: Annotated[
        list[Path] | None,
        typer.Option(
            "--cluster", help="trusted cluster directory (repeatable; the first is local)"
        ),
    ] = None,
    cacerts: Annotated[
        Path | None, typer.Option("--cacerts", help="plugged-in CA directory")
    ] = None,
    trust_domain: Annotated[
        str | None, typer.Option("--trust-domain", help="mesh trust domain (default cluster.local)")
    ] = None,
    plaintext: Annotated[bool, typer.Option("--plaintext", help="no TLS (debugging only)")] = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="check tokens with this cluster's TokenReview API"),
    ] = None,
    cluster_id: Annotated[
        str | None, typer.Option("--cluster-id", help="id of --kubeconfig cluster")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="processes (0 = one per core)")
    ] = None,
    remote_secrets: Annotated[
        Path | None,
        typer.Option(
            "--remote-secrets", help="directory of remote secrets (create-remote-secret), watched"
        ),
    ] = None,
    cluster_alias: Annotated[
        list[str] | None,
        typer.Option("--cluster-alias", help="ALIAS=CLUSTER (Istio clusterAliases; repeatable)"),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="settings file (YAML)")] = None,
) -> None:
    """Serve IstioCertificateService/CreateCertificate until SIGTERM / SIGINT."""
    from meshsec.ca.server import run_ca
    from meshsec.runtime.log import setup_logging

    flags: dict[str, Any] = {
        "data_dir": data_dir,
        "listen": listen,
        "mtls_listen": mtls_listen,
        "monitoring": monitoring,
        "clusters": tuple(str(c) for c in cluster or ()),
        "cacerts": cacerts,
        "trust_domain": trust_domain,
        "plaintext": True if plaintext else None,
        "kubeconfig": kubeconfig,
        "cluster_id": cluster_id,
        "workers": workers,
        "remote_secrets": remote_secrets,
        "cluster_aliases": tuple(cluster_alias or ()),
    }
    settings = load_settings(CaSettings, flags=flags, file=config)
    setup_logging(settings.log_level)
    raise typer.Exit(run_ca(settings))


@ca_app.command("root")
def root(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="the CA's data directory")],
) -> None:
    """Print the root bundle the CA serves (PEM)."""
    from meshsec.ca.material import load_published_root

    typer.echo(load_published_root(data_dir), nl=False)


@ca_app.command("issued")
def issued(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="the CA's data directory")],
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
) -> None:
    """List the certificates the CA has issued (from the ledger)."""
    from meshsec.ca.ledger import LEDGER_FILE, load_issued
    from meshsec.config.errors import ConfigError

    if output not in ("table", "json"):
        raise ConfigError([f"-o {output!r}: use table or json"])
    records = list(load_issued(data_dir / LEDGER_FILE))
    if output == "json":
        typer.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    table = Table(title=f"issued by the CA in {data_dir} ({len(records)})")
    for column in ("serial", "SPIFFE ID", "not before", "not after", "authn", "cluster", "at"):
        table.add_column(column, no_wrap=True)
    for r in records:
        row = r.to_json()
        table.add_row(
            row["serial"],
            row["spiffe_id"],
            row["not_before"],
            row["not_after"],
            row["authenticator"],
            row["cluster"] or "-",
            row["issued_at"],
        )
    # A pipe gets the full rows (scripts grep them); a terminal gets its own width.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(ca_app, name="ca")
