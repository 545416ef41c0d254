"""Child processes of the local mesh: started in their own process group, logged to a file,
stopped with SIGTERM then SIGKILL, and watched for unexpected exits.

Each child gets its own session (``start_new_session``), so stopping it signals the whole group
(an application's own children included) and a Ctrl-C in the terminal reaches only ``meshsec
up``, which then stops the children in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meshsec.mesh.errors import StartupError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20


def read_log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """One child: ``owner`` names it in messages (``agent of photo-ns/photo-frontend``)."""

    owner: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str]
    cwd: Path | None = None
    capture_stdout: bool = False
    process: asyncio.subprocess.Process | None = None
    stopping: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logfile:
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE if self.capture_stdout else logfile,
                    stderr=logfile,
                    env=dict(self.env),
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StartupError(
                    self.owner, f"cannot start {self.argv[0]!r}: {exc.strerror or exc}", ""
                ) from None
        asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        assert self.process is not None
        await self.process.wait()
        self.exited.set()

    def failure(self, what: str) -> StartupError:
        return StartupError(self.owner, what, read_log_tail(self.log_path))

    async def read_line(self, wait: float) -> str:
        """One stdout line (capture_stdout), '' at EOF; TimeoutError after ``wait`` seconds."""
        assert self.process is not None
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), wait)
        return line.decode("utf-8", "replace")

    async def wait_for_line(self, prefix: str, *, within: float) -> str:
        """Read stdout until a line starting with ``prefix`` (returned without it); a failure
        naming this process if it exits or ``within`` seconds pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self.failure(f"not ready after {within:.0f}s")
            try:
                line = await self.read_line(remaining)
            except TimeoutError:
                continue
            if not line:
                await self.exited.wait()
                raise self.failure(f"exited with code {self.returncode} while starting")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    async def forward_stdout(self) -> None:
        """Copy the rest of stdout to the log (after a ready line was read)."""
        assert self.process is not None
        assert self.process.stdout is not None
        with self.log_path.open("ab") as logfile:
            while line := await self.process.stdout.readline():
                logfile.write(line)
                logfile.flush()

    def _signal_group(self, sig: int) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds; always waits for the exit."""
        self.stopping = True
        if self.process is None:
            return
        if self.process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.exited.wait(), grace)
            except TimeoutError:
                log.warning("%s did not stop within %.0fs; killing it", self.owner, grace)
                self._signal_group(signal.SIGKILL)
                await self.exited.wait()
        # the group may still hold children of the application: take them down too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


__all__ = ["ManagedProcess", "read_log_tail"]
