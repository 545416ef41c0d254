"""The command line of ``meshsec agent run``, without the CLI framework.

``meshsec`` (typer) forwards ``agent run ARGS`` here. When the process itself was started as
``meshsec agent run ...`` it first execs ``python -m meshsec.agent run ARGS`` (same PID, same
stdio, same environment): the long-running agent then carries none of the CLI framework's modules
(typer, its vendored click, pydantic and its Rust core: ~11 MB of RSS measured by
``bench/agent.py``). The flags are defined once, here; every flag also has an environment
variable (Istio's name where one exists) and flags win over the environment, which wins over
``--config`` (see :mod:`meshsec.config.agent`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from meshsec.errors import MeshsecError

PROG = "meshsec agent run"
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Flag:
    option: str
    field: str  # AgentSettings field
    kind: str  # "str" | "path" | "socket" | "bool"
    help: str

    @property
    def described(self) -> str:
        """``help`` plus the environment variable the settings loader reads for this field
        (taken from :class:`~meshsec.config.agent.AgentSettings`, so the two cannot drift)."""
        env = _settings_env().get(self.field)
        return f"{self.help} (env {env})" if env else self.help


@functools.cache
def _settings_env() -> dict[str, str]:
    """AgentSettings field → its first environment variable name."""
    import dataclasses

    from meshsec.config.agent import AgentSettings
    from meshsec.config.load import setting_info

    return {
        f.name: setting_info(f).env[0]
        for f in dataclasses.fields(AgentSettings)
        if setting_info(f).env
    }


FLAGS: tuple[Flag, ...] = (
    Flag("--ca-addr", "ca_addr", "str", "CA HOST:PORT"),
    Flag("--ca-root", "ca_root", "path", "root that verifies the CA"),
    Flag("--token-file", "token_file", "path", "service-account token"),
    Flag("--cluster-id", "cluster_id", "str", "clusterid header"),
    Flag("--sds-socket", "sds_socket", "path", "Envoy SDS socket"),
    Flag(
        "--workload-socket",
        "workload_socket",
        "socket",
        "SPIFFE Workload API socket, unix:///path or a path",
    ),
    Flag("--output-certs", "output_certs", "path", "write cert files here"),
    Flag("--status", "status", "str", "status HTTP HOST:PORT"),
    Flag("--trust-domain", "trust_domain", "str", "trust domain"),
    Flag(
        "--ca-mtls-addr",
        "ca_mtls_addr",
        "str",
        "CA port for client-cert renewal without a token",
    ),
    Flag(
        "--file-mounted-certs",
        "file_mounted_certs",
        "bool",
        "serve ./etc/certs files, no CA",
    ),
    Flag(
        "--mounted-certs-dir",
        "mounted_certs_dir",
        "path",
        "mounted certs dir",
    ),
    Flag("--secret-ttl", "secret_ttl", "str", "requested lifetime"),
    Flag("--log-level", "log_level", "str", "debug | info | warning"),
)

DESCRIPTION = (
    "Get and rotate this workload's certificate; serve it over SDS, the Workload API, files. "
    "Runs until SIGTERM / SIGINT, then removes its sockets."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    for flag in FLAGS:
        if flag.kind == "bool":
            parser.add_argument(
                flag.option, dest=flag.field, action="store_true", help=flag.described
            )
        else:
            metavar = "PATH" if flag.kind in ("path", "socket") else "VALUE"
            parser.add_argument(flag.option, dest=flag.field, metavar=metavar, help=flag.described)
    parser.add_argument("--config", metavar="FILE", help="settings file (YAML)")
    return parser


def parse_flags(argv: Sequence[str]) -> tuple[dict[str, Any], Path | None]:
    """``argv`` → (flags for ``load_settings``, ``--config`` file). Usage errors exit 2
    (argparse); a bad ``--workload-socket`` raises ConfigError naming the flag."""
    from meshsec.config.agent import parse_unix_socket_path
    from meshsec.config.errors import ConfigError

    parsed = vars(build_parser().parse_args(list(argv)))
    flags: dict[str, Any] = {}
    for flag in FLAGS:
        value = parsed[flag.field]
        if flag.kind == "bool":
            value = True if value else None  # absent: the environment / file decide
        elif value is not None and flag.kind == "path":
            value = Path(value)
        elif value is not None and flag.kind == "socket":
            try:
                value = parse_unix_socket_path(value)
            except ValueError as exc:
                raise ConfigError([f"flag {flag.option}: {exc}"]) from None
        flags[flag.field] = value
    config = parsed["config"]
    return flags, Path(config) if config is not None else None


def main(argv: Sequence[str]) -> int:
    """Run the agent with ``argv`` (the arguments after ``agent run``); the exit code.

    0 stopped by a signal; 2 bad flags / settings / socket in use (the message says which);
    3 a background task crashed.
    """
    from meshsec.agent.run import run_agent
    from meshsec.config.agent import load_agent_settings
    from meshsec.runtime.log import setup_logging

    try:
        flags, config = parse_flags(argv)
        settings = load_agent_settings(flags=flags, file=config)
        setup_logging(settings.log_level)
        return run_agent(settings)
    except MeshsecError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


def exec_agent(argv: Sequence[str]) -> NoReturn:
    """Replace this process with ``python -m meshsec.agent run ARGV`` (the lean agent process)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "meshsec.agent", "run", *argv])  # noqa: S606


def entrypoint(argv: Sequence[str] | None = None) -> int:
    """``python -m meshsec.agent run [FLAGS]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "run":
        print(f"usage: python -m meshsec.agent run [FLAGS]  (see {PROG} --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return main(args[1:])
