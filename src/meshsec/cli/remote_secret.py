"""``meshsec create-remote-secret``: istioctl's remote secret for a local cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from meshsec.config.errors import ConfigError


def create_remote_secret(
    cluster: Annotated[
        Path, typer.Option("--cluster", help="the remote cluster's directory (cluster init)")
    ],
    name: Annotated[str, typer.Option("--name", help="cluster id (DNS-1123 label), e.g. cluster2")],
    server: Annotated[
        str | None,
        typer.Option(
            "--server", help="API server URL as the primary reaches it (default: the running one)"
        ),
    ] = None,
    token_ttl: Annotated[
        str, typer.Option("--token-ttl", help="lifetime of the reader account's token")
    ] = "8760h",  # noqa: S107 - a duration, not a secret
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="write to this file (0600, atomically) not stdout"),
    ] = None,
) -> None:
    """Print the Secret that lets a primary's CA check this cluster's tokens (TokenReview)."""
    from meshsec.cluster import load_cluster_signer
    from meshsec.cluster.kubeconfig import (
        mint_account_kubeconfig,
        render_remote_secret,
        verify_dns1123_label,
    )
    from meshsec.config.load import parse_duration
    from meshsec.runtime.files import KEY_MODE, write_atomic

    verify_dns1123_label(name)
    if server is not None and not server.startswith("https://"):
        raise ConfigError([f"--server {server!r} must be an https:// URL"])
    try:
        ttl = parse_duration(token_ttl)
    except ValueError as exc:
        raise ConfigError([f"--token-ttl: {exc}"]) from None
    signer = load_cluster_signer(cluster)
    if name != signer.trust.name:
        # istioctl cannot know a cluster's own name; we can: a mismatch sends TokenReviews for
        # `clusterid: <name>` to this cluster's API server (its tokens say nothing of <name>)
        typer.echo(
            f"warning: --name {name} but {cluster} is cluster {signer.trust.name}: the primary's "
            f"CA will check tokens from callers with clusterid {name} on {signer.trust.name}'s "
            "API server",
            err=True,
        )
    kubeconfig = mint_account_kubeconfig(
        signer, name, server=server, now=datetime.now(UTC), ttl=ttl
    )
    text = render_remote_secret(name, kubeconfig)
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_atomic(output, text.encode(), KEY_MODE)
        typer.echo(f"wrote {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("create-remote-secret")(create_remote_secret)
