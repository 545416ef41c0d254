"""``meshsec proxy run`` as processes: one sidecar process, or ``--concurrency`` workers
(:mod:`meshsec.proxy.workers`) that share the listening sockets bound before the fork
(:func:`meshsec.proxy.listener.bind_shared`), the metrics directory the parent makes, and one
session-ticket secret (:mod:`meshsec.proxy.tls`). Each process runs a
:class:`~meshsec.proxy.server.ProxyServer` on uvloop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from meshsec.config.proxy import ProxySettings
from meshsec.proxy.listener import become_worker, bind_shared
from meshsec.proxy.metrics import (
    build_aggregate_registry,
    forget_worker,
    record_to_shared_dir,
    shared_metrics_dir,
)
from meshsec.proxy.server import ProxyServer
from meshsec.proxy.workers import run_workers, worker_count


async def serve_proxy(
    settings: ProxySettings,
    *,
    admin: bool = True,
    reuse_port: bool = False,
    metrics_dir: Path | None = None,
    ticket_secret: bytes | None = None,
) -> int:
    """``metrics_dir``: a ``--concurrency`` worker's shared metrics directory (its metrics go to
    files there; the admin worker reports the sum over every worker's)."""
    if metrics_dir is not None:
        record_to_shared_dir(metrics_dir)
    server = ProxyServer(
        settings,
        admin=admin,
        reuse_port=reuse_port,
        admin_registry=build_aggregate_registry(metrics_dir) if metrics_dir and admin else None,
        ticket_secret=ticket_secret,
    )
    await server.start()
    await server.run_until_stopped()
    return 0


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """On uvloop (stdlib asyncio where uvloop is unavailable)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(main)
    return uvloop.run(main)


def run_proxy(settings: ProxySettings) -> int:
    """Run the sidecar until signalled: one process, or ``--concurrency`` workers."""
    count = worker_count(settings.concurrency)
    # session tickets: one secret for the run, made before the workers fork, so a ticket
    # resumes on whichever worker takes the connection
    secret = os.urandom(32)
    if count <= 1:
        return run_workers(
            1, lambda _index: run_event_loop(serve_proxy(settings, ticket_secret=secret))
        )
    bind_shared(settings.listen_addresses, workers=count)

    def serve_worker(index: int, metrics_dir: Path) -> int:
        become_worker(index)
        return run_event_loop(
            serve_proxy(
                settings,
                admin=index == 0,
                reuse_port=True,
                metrics_dir=metrics_dir,
                ticket_secret=secret,
            )
        )

    with shared_metrics_dir() as metrics_dir:
        return run_workers(
            count,
            lambda index: serve_worker(index, metrics_dir),
            exited=lambda pid: forget_worker(metrics_dir, pid),
        )
