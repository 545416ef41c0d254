"""``meshsec agent run``: the node agent (pilot-agent's security half).

The flags are defined once, in :data:`meshsec.agent.command.FLAGS`; this module turns that table
into the typer command (help, parsing, ``docs/configuration.md``). The agent itself runs without
this CLI framework: when this process was started as ``meshsec agent run ...`` it execs
``python -m meshsec.agent run ...`` (same PID, stdio and environment), so the long-running agent
does not carry typer, click and pydantic (~11 MB RSS). Called in-process (``main([...])``), the
same code runs without an exec.
"""

from __future__ import annotations

import inspect
import sys
from typing import Annotated, Any

import typer

from meshsec.agent.command import DESCRIPTION, FLAGS, Flag

agent_app = typer.Typer(
    help="The node agent: workload keys, rotation, Envoy SDS, SPIFFE Workload API.",
    no_args_is_help=True,
)

_CONFIG = Flag("--config", "config", "path", "settings file (YAML)")


def build_argv(values: dict[str, Any]) -> list[str]:
    """Parsed option values → the agent's own command line (``meshsec.agent.command``)."""
    argv: list[str] = []
    for flag in (*FLAGS, _CONFIG):
        value = values.get(flag.field)
        if flag.kind == "bool":
            if value:
                argv.append(flag.option)
        elif value is not None:
            argv += [flag.option, str(value)]
    return argv


def run(ctx: typer.Context, **values: Any) -> None:
    from meshsec.agent.command import exec_agent, main

    argv = build_argv(values)
    if sys.argv[1:3] == ["agent", "run"]:  # this process is `meshsec agent run ...`
        exec_agent(argv)
    raise typer.Exit(main(argv))


def _option(flag: Flag) -> inspect.Parameter:
    if flag.kind == "bool":
        annotation: Any = Annotated[bool, typer.Option(flag.option, help=flag.described)]
        default: Any = False
    else:
        metavar = "PATH" if flag.kind in ("path", "socket") else "TEXT"
        annotation = Annotated[
            str | None, typer.Option(flag.option, help=flag.described, metavar=metavar)
        ]
        default = None
    return inspect.Parameter(
        flag.field, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


_PARAMS = [
    inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    *(_option(flag) for flag in (*FLAGS, _CONFIG)),
]
run.__signature__ = inspect.Signature(_PARAMS)  # type: ignore[attr-defined]
run.__annotations__ = {p.name: p.annotation for p in _PARAMS} | {"return": None}
run.__doc__ = DESCRIPTION
agent_app.command("run")(run)


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")
