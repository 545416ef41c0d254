"""``run_agent``: the process around :class:`meshsec.agent.server.Agent` (signals, exit codes)."""

from __future__ import annotations

import asyncio
import logging
import signal

from meshsec.agent.errors import AgentError, SocketInUseError
from meshsec.agent.server import Agent
from meshsec.config.agent import AgentSettings
from meshsec.config.errors import ConfigError
from meshsec.runtime.clock import SystemClock

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASHED = 3


def check_startup(settings: AgentSettings) -> None:
    """Refuse to start on problems that retrying cannot fix (ConfigError, exit 2)."""
    problems = []
    ca_root = settings.ca_root
    if ca_root is not None and not settings.file_mounted_certs and not ca_root.is_file():
        problems.append(f"--ca-root {settings.ca_root}: file does not exist")
    if settings.file_mounted_certs and not settings.mounted_certs_dir.is_dir():
        problems.append(
            f"FILE_MOUNTED_CERTS: directory {settings.mounted_certs_dir} does not exist"
        )
    if problems:
        raise ConfigError(problems)
    if settings.file_mounted_certs:
        log.info("serving the certificates mounted in %s (no CA)", settings.mounted_certs_dir)
    if not settings.file_mounted_certs and not settings.ca_root_path.exists():
        log.warning(
            "CA root %s (PILOT_CERT_PROVIDER=%s) does not exist yet; will keep retrying",
            settings.ca_root_path,
            settings.pilot_cert_provider,
        )


async def serve_agent(settings: AgentSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(settings, clock=SystemClock())
    try:
        await agent.run(stop)
    except SocketInUseError:
        raise
    except AgentError as exc:
        log.error("%s", exc)
        return EXIT_CRASHED
    log.info("agent stopped; sockets removed")
    return EXIT_OK


def run_agent(settings: AgentSettings) -> int:
    """Run until SIGTERM/SIGINT. SocketInUseError / ConfigError propagate (CLI exit 2)."""
    check_startup(settings)
    return asyncio.run(serve_agent(settings))
