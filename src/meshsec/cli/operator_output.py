"""Shared conventions of the operator commands (``proxy-config``, ``describe``, ``check``,
``status``): the ``-o`` formats, JSON/YAML emission, rich tables, time formatting and the table
mapping errors to exit codes (0 ok, 1 problem found, 2 bad input, 3 mesh not running/unreachable).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from meshsec.cli.admin_http import AdminUnavailable
from meshsec.cli.mesh_view import MissingConfig, UnknownService
from meshsec.cli.meshstate import (
    MeshState,
    MeshStateError,
    UnknownWorkload,
    find_state_file,
    load_mesh_state,
)
from meshsec.errors import MeshsecError

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3

FORMATS = ("table", "json", "yaml")

OutputOption = Annotated[
    str,
    typer.Option("--output", "-o", help="table (for people), json or yaml (for scripts)."),
]

# Exit code per error class, most specific first (tests cover every row).
ERROR_EXIT_CODES: tuple[tuple[type[MeshsecError], int], ...] = (
    (UnknownWorkload, EXIT_BAD_INPUT),
    (UnknownService, EXIT_BAD_INPUT),
    (MissingConfig, EXIT_BAD_INPUT),
    (MeshStateError, EXIT_UNAVAILABLE),
    (AdminUnavailable, EXIT_UNAVAILABLE),
)


def exit_code_for(error: MeshsecError) -> int:
    for cls, code in ERROR_EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_BAD_INPUT


@contextlib.contextmanager
def operator_errors() -> Iterator[None]:
    """Print a MeshsecError as ``error: ...`` and exit with its code from the table."""
    try:
        yield
    except MeshsecError as exc:
        code = exit_code_for(exc)
        hint = "mesh unavailable: " if code == EXIT_UNAVAILABLE else ""
        typer.secho(f"error: {hint}{exc}", err=True, fg="red")
        raise typer.Exit(code) from None


def check_format(output: str) -> str:
    fmt = "table" if output in ("short", "text") else output
    if fmt not in FORMATS:
        typer.secho(
            f"error: --output must be one of {', '.join(FORMATS)}, not {output!r}",
            err=True,
            fg="red",
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    return fmt


def open_mesh(mesh: Path | None) -> MeshState:
    return load_mesh_state(find_state_file(mesh, cwd=Path.cwd()))


def emit_document(document: Any, fmt: str) -> None:
    if fmt == "yaml":
        typer.echo(yaml.safe_dump(document, sort_keys=False, default_flow_style=False).rstrip())
    else:
        typer.echo(json.dumps(document, indent=2))


def console() -> Console:
    """Tables never fold when piped (scripts grep them); a terminal gets at least 100 columns."""
    probe = Console()
    width = max(probe.width, 100) if probe.is_terminal else 1000
    return Console(highlight=False, soft_wrap=False, width=width)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None
) -> None:
    """A borderless table like istioctl's tabwriter output."""
    table = Table(
        title=title,
        title_justify="left",
        box=None,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
    )
    for header in headers:  # headers are ours
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # plain text: no rich markup from data
    console().print(table)


def format_rfc3339(value: datetime | str | None) -> str:
    """RFC3339 in UTC with a ``Z`` (istioctl's format); '' for None."""
    if value is None:
        return ""
    moment = parse_time(value) if isinstance(value, str) else value
    if moment is None:
        return str(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def format_duration(delta: timedelta) -> str:
    """``23h59m``, ``4m10s``, ``-2m0s`` (expired) — like kubectl's ages."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours}h"
    if hours:
        return f"{sign}{hours}h{minutes}m"
    return f"{sign}{minutes}m{secs}s"


def compose_cli_command(*, on_path: str | None, executable: str, cwd: Path) -> str:
    """How to spell ``meshsec`` in hints a user will paste: ``meshsec`` when that name on PATH
    is this installation, else this installation's script (``.venv/bin/meshsec``, relative to
    ``cwd`` when below it), else ``<python> -m meshsec``."""
    bin_dir = Path(executable).parent
    script = bin_dir / "meshsec"
    if on_path is not None and (
        not script.exists() or os.path.realpath(on_path) == os.path.realpath(script)
    ):
        return "meshsec"
    if script.exists():
        return _relative(script, cwd)
    return f"{_relative(Path(executable), cwd)} -m meshsec"


def _relative(path: Path, cwd: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(cwd))
    except ValueError:
        return str(absolute)


def cli_command() -> str:
    """``compose_cli_command`` for this process (for the hints ``meshsec up`` prints)."""
    return compose_cli_command(
        on_path=shutil.which("meshsec"), executable=sys.executable, cwd=Path.cwd()
    )
