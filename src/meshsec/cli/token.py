"""``meshsec token mint``: a projected service-account token from a local cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from meshsec.cluster import DEFAULT_AUDIENCE, TokenRequest, load_cluster_signer, mint_token
from meshsec.config.errors import ConfigError
from meshsec.config.load import parse_duration

token_app = typer.Typer(help="Service-account tokens from a local cluster.", no_args_is_help=True)


@token_app.command("mint")
def mint(
    cluster: Annotated[
        Path, typer.Option("--cluster", help="cluster directory (meshsec cluster init)")
    ],
    namespace: Annotated[str, typer.Option("--namespace", help="the service account's namespace")],
    service_account: Annotated[str, typer.Option("--service-account", help="service account name")],
    audience: Annotated[
        list[str] | None,
        typer.Option("--audience", help="aud claim (repeatable; default istio-ca)"),
    ] = None,
    ttl: Annotated[str, typer.Option("--ttl", help="lifetime, e.g. 1h, 30m, 12h")] = "1h",
    pod: Annotated[str | None, typer.Option("--pod", help="bind the token to a pod name")] = None,
) -> None:
    """Print a token shaped like a projected Kubernetes service-account token."""
    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        raise ConfigError([f"--ttl: {exc}"]) from None
    signer = load_cluster_signer(cluster)
    audiences = tuple(audience) if audience else (DEFAULT_AUDIENCE,)
    req = TokenRequest(namespace, service_account, audiences, lifetime, pod)
    typer.echo(mint_token(signer, req, now=datetime.now(UTC)))


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
