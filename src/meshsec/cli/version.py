"""``meshsec version``."""

from __future__ import annotations

import typer

from meshsec import __version__


def register(app: typer.Typer) -> None:
    @app.command("version")
    def version() -> None:
        """Print meshsec's version."""
        typer.echo(__version__)
