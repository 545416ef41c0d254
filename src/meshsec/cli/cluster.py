"""``meshsec cluster init``: a local stand-in for a Kubernetes cluster's token issuer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from meshsec.cluster import init_cluster_dir

cluster_app = typer.Typer(
    help="Local stand-ins for Kubernetes clusters (service-account token issuer + JWKS).",
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
        f"next: meshsec token mint --cluster {directory} --namespace default "
        "--service-account default"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
