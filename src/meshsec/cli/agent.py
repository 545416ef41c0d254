"""``meshsec agent run``: the node agent (pilot-agent's security half).

The flags live in :mod:`meshsec.agent.command` (one definition, argparse), so the agent can run
without this CLI framework: when this process was started as ``meshsec agent run ...`` it execs
``python -m meshsec.agent run ...`` (same PID, stdio and environment) and the long-running agent
does not carry typer, click and pydantic (~11 MB RSS). Called in-process (``main([...])``), the
arguments are handed to the same code without an exec.
"""

from __future__ import annotations

import sys

import typer

agent_app = typer.Typer(
    help="The node agent: workload keys, rotation, Envoy SDS, SPIFFE Workload API.",
    no_args_is_help=True,
)


@agent_app.command(
    "run",
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run(ctx: typer.Context) -> None:
    """Get and rotate this workload's certificate; serve it over SDS, the Workload API, files.

    Flags: --ca-addr --ca-root --token-file --cluster-id --sds-socket --workload-socket
    --output-certs --status --trust-domain --ca-mtls-addr --file-mounted-certs
    --mounted-certs-dir --secret-ttl --log-level --config (`meshsec agent run --help`).
    Runs until SIGTERM / SIGINT, then removes its sockets.
    """
    from meshsec.agent.command import exec_agent, main

    args = list(ctx.args)
    if sys.argv[1:] == ["agent", "run", *args]:  # this process is `meshsec agent run ...`
        exec_agent(args)
    raise typer.Exit(main(args))


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")
