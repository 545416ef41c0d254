"""The ``meshsec`` command: registers each command group and maps errors to exit codes.

Exit codes: 0 success; 1 the command ran and found a problem (analysis errors, a failed check,
a denied verdict); 2 bad input or configuration (the message says what and where);
3 an unexpected failure talking to a running component.
"""

from __future__ import annotations

import importlib
import sys

import typer

from meshsec.config.errors import ConfigError
from meshsec.errors import MeshsecError

app = typer.Typer(
    name="meshsec",
    help="A service-mesh security plane: SPIFFE identity, CA, node agent, mTLS sidecar, policy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK = 0
EXIT_FOUND_PROBLEM = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


# Top-level command -> the module that registers it (each exposes `register(app)`).
COMMAND_MODULES: dict[str, str] = {
    "agent": "agent",
    "analyze": "analyze",
    "ca": "ca",
    "cert": "certs",
    "certs": "certs",
    "check": "check",
    "cluster": "cluster",
    "create-remote-secret": "remote_secret",
    "demo": "demo",
    "describe": "describe",
    "policy": "policy",
    "proxy": "proxy",
    "proxy-config": "proxy_config",
    "status": "status",
    "token": "token",
    "up": "up",
    "version": "version",
}


def _register(argv: list[str] | None = None) -> None:
    """Attach the command groups. When ``argv`` names a command, only its module is imported:
    a long-running ``meshsec agent run`` then carries none of the other commands' imports (the
    agent's memory budget is tight). Otherwise (``--help``, a typo) every group is attached."""
    first = next((a for a in argv or () if not a.startswith("-")), None)
    wanted = {COMMAND_MODULES[first]} if first in COMMAND_MODULES else set(COMMAND_MODULES.values())
    for name in sorted(wanted):
        importlib.import_module(f"meshsec.cli.{name}").register(app)


@app.callback()
def _root() -> None:
    """A service-mesh security plane: SPIFFE identity, CA, node agent, mTLS sidecar, policy."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (usage errors from the parser exit 2)."""
    _register(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_BAD_INPUT)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        return EXIT_BAD_INPUT
    except MeshsecError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
