"""The ``meshsec`` command: registers each command group and maps errors to exit codes.

Exit codes: 0 success; 1 the command ran and found a problem (analysis errors, a failed check,
a denied verdict); 2 bad input or configuration (the message says what and where);
3 an unexpected failure talking to a running component.
"""

from __future__ import annotations

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


def _register() -> None:
    """Attach every command group. Imports are local so ``meshsec --help`` stays cheap."""
    # Each group module exposes `register(app)`; keep this list sorted.
    from meshsec.cli import (
        agent,
        analyze,
        ca,
        certs,
        cluster,
        demo,
        policy,
        proxy,
        remote_secret,
        token,
        up,
        version,
    )

    for module in (
        agent,
        analyze,
        ca,
        certs,
        cluster,
        demo,
        policy,
        proxy,
        remote_secret,
        token,
        up,
        version,
    ):
        module.register(app)
    from meshsec.cli import check, describe, proxy_config, status  # operator commands

    for module in (check, describe, proxy_config, status):
        module.register(app)


@app.callback()
def _root() -> None:
    """A service-mesh security plane: SPIFFE identity, CA, node agent, mTLS sidecar, policy."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (usage errors from the parser exit 2)."""
    _register()
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
