"""``meshsec analyze DIR|FILE... [-o json]``: every problem in a set of Istio/Kubernetes YAML.

Parses the files (strictly, with line numbers), runs the analyzers and prints every diagnostic.
Exit codes: 0 no errors (warnings and info allowed), 1 at least one error (or a diagnostic at
``--failure-threshold``), 2 an input could not be read (missing path, permission, not UTF-8).
``--failure-threshold`` and ``--output-threshold`` behave like istioctl analyze's.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from meshsec.config.sources.files import FileContent, build_snapshot, read_files
from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.analyze import collect_diagnostics, count_levels
from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.snapshot import PolicySnapshot

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_UNREADABLE = 2

_HEADERS = ("LEVEL", "CODE", "LOCATION", "RESOURCE", "MESSAGE")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def diagnostic_record(diag: Diagnostic) -> dict[str, object]:
    """The JSON form of one diagnostic (stable keys; documented in docs/cli.md)."""
    return {
        "code": diag.code,
        "name": dg.lookup(diag.code).name,
        "level": diag.level.value,
        "resource": diag.resource,
        "file": diag.file,
        "line": diag.line,
        "path": diag.path,
        "message": diag.message,
    }


def render_table(diagnostics: tuple[Diagnostic, ...]) -> str:
    """Aligned columns; the message is last and never truncated."""
    rows = [
        (d.level.value, d.code, d.location if d.file else "-", d.resource or "-", d.message)
        for d in diagnostics
    ]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(_HEADERS[:-1])]
    lines = []
    for row in [_HEADERS, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]))
    counts = count_levels(diagnostics)
    lines.append(
        f"\n{counts['Error']} error(s), {counts['Warning']} warning(s), {counts['Info']} info"
    )
    return "\n".join(lines)


class Threshold(StrEnum):
    """A level name as istioctl analyze spells it."""

    Error = "Error"
    Warning = "Warning"
    Info = "Info"

    @property
    def rank(self) -> int:
        return Level(self.value).rank


def exit_code(
    diagnostics: tuple[Diagnostic, ...], failure_threshold: Threshold = Threshold.Error
) -> int:
    """2 when an input was unreadable, 1 when a diagnostic reaches the threshold, else 0."""
    if any(d.code == dg.UNREADABLE.code for d in diagnostics):
        return EXIT_UNREADABLE
    if any(d.level.rank >= failure_threshold.rank for d in diagnostics):
        return EXIT_ERRORS
    return EXIT_OK


def render_catalog() -> str:
    width = max(len(c.name) for c in dg.CATALOG)
    return "\n".join(
        f"{c.code:<7}  {c.level.value:<7}  {c.name:<{width}}  {c.summary}" for c in dg.CATALOG
    )


STDIN = "-"


def _load(paths: list[Path]) -> PolicySnapshot:
    """Files and directories, plus standard input for ``-`` (``kubectl get ... -o yaml |``)."""
    contents, problems = read_files([p for p in paths if str(p) != STDIN])
    if any(str(p) == STDIN for p in paths):
        contents.append(FileContent("<stdin>", sys.stdin.buffer.read()))
    return build_snapshot(contents, problems)


def register(app: typer.Typer) -> None:
    @app.command("analyze")
    def analyze(
        paths: Annotated[
            list[Path] | None,
            typer.Argument(
                help="Directories (searched recursively for .yaml/.yml/.json), files, or - "
                "for standard input.",
                show_default=False,
            ),
        ] = None,
        output: Annotated[
            OutputFormat, typer.Option("--output", "-o", help="table or json.")
        ] = OutputFormat.table,
        failure_threshold: Annotated[
            Threshold,
            typer.Option(
                "--failure-threshold",
                help="Exit 1 when a diagnostic of this level or above is found.",
            ),
        ] = Threshold.Error,
        output_threshold: Annotated[
            Threshold,
            typer.Option("--output-threshold", help="Print diagnostics of this level and above."),
        ] = Threshold.Info,
        list_codes: Annotated[
            bool, typer.Option("--list-codes", help="Print every diagnostic code and exit.")
        ] = False,
    ) -> None:
        """Check Istio security YAML (PeerAuthentication, DestinationRule, AuthorizationPolicy,
        plus Namespaces, Services, workloads and the istio mesh ConfigMap) and report every
        problem with file, line and a stable code. Exit 1 on errors, 2 on unreadable input."""
        if list_codes:
            typer.echo(render_catalog())
            raise typer.Exit(EXIT_OK)
        if not paths:
            typer.secho("error: give at least one directory or file", err=True, fg="red")
            raise typer.Exit(EXIT_UNREADABLE)
        snapshot = _load(paths)
        diagnostics = collect_diagnostics(snapshot)
        shown = tuple(d for d in diagnostics if d.level.rank >= output_threshold.rank)
        if output is OutputFormat.json:
            typer.echo(json.dumps([diagnostic_record(d) for d in shown], indent=2))
        elif shown:
            typer.echo(render_table(shown))
        else:
            typer.echo("no problems found")
        raise typer.Exit(exit_code(diagnostics, failure_threshold))
