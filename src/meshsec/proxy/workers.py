"""``--concurrency N``: worker processes sharing the listeners (Envoy's ``--concurrency``).

Python runs one event loop per core at most, so the proxy scales over cores with processes: the
parent forks N workers before any loop exists; each is a complete proxy (own loop, certificate
source, policy watch). The listening sockets of the ports known at start are bound by the parent
before it forks (:func:`meshsec.proxy.listener.bind_shared`), so every worker waits on the same
socket and whichever is free takes the next connection, as haproxy's threads do; ports that
appear later (from ``--config-dir``) are bound by each worker with ``SO_REUSEPORT``.
Worker 0 also serves the admin port (its ``/metrics`` sum every worker's metrics,
:mod:`meshsec.proxy.metrics`; ``/config_dump`` shows the configuration every worker applies,
since they all read the same sources). The parent forwards SIGTERM/SIGINT to the
workers and waits for them; when one worker fails, the others are stopped too and its exit code
is the parent's (a supervisor restarts the whole proxy, as it would restart Envoy).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("meshsec.proxy.workers")

Serve = Callable[[int], int]
"""Runs worker ``index`` to completion, returns its exit code."""
Exited = Callable[[int], None]
"""Told the pid of each worker the parent reaps."""


def worker_count(concurrency: int) -> int:
    """``0`` means one worker per CPU."""
    return concurrency if concurrency > 0 else (os.cpu_count() or 1)


def run_workers(count: int, serve: Serve, *, exited: Exited | None = None) -> int:
    """Fork ``count`` workers running ``serve(index)``; wait for all; the first failure wins.
    ``exited(pid)`` runs in the parent as each worker is reaped."""
    if count <= 1:
        return serve(0)
    pids: list[int] = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = serve(index)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        pids.append(pid)
    log.info("%d workers: pids %s", count, ", ".join(map(str, pids)))

    def forward(signum: int, _frame: FrameType | None) -> None:
        _signal_all(pids, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _wait_all(pids, exited)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_all(pids: list[int], exited: Exited | None) -> int:
    remaining = set(pids)
    result = 0
    while remaining:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in remaining:
            continue
        remaining.discard(pid)
        if exited is not None:
            exited(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and result == 0:
            result = code if code > 0 else 1
            log.error(
                "worker pid %d exited with %s; stopping the other workers",
                pid,
                f"code {code}" if code > 0 else f"signal {-code}",
            )
            _signal_all(sorted(remaining), signal.SIGTERM)
    return result


__all__ = ["run_workers", "worker_count"]
