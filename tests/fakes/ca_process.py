"""A real ``meshsec ca serve`` process for e2e / interop tests (not a fake: the real CLI).

Starts the CA on loopback port 0, waits for its ready line (with a deadline, no sleeps), parses
the addresses it prints, and stops it with SIGTERM.
"""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(
    r"meshsec ca ready: listening on (?P<listen>\S+) \((?P<scheme>tls|plaintext)\)"
    r"(?: mtls (?P<mtls>\S+))? metrics http://(?P<metrics>\S+)/metrics "
    r"root sha256:(?P<root>[0-9a-f]{64}) trust-domain (?P<td>\S+) workers (?P<workers>\d+)"
)
MESHSEC = [sys.executable, "-m", "meshsec"]


@dataclass
class CaProcess:
    data_dir: Path
    args: list[str]
    process: subprocess.Popen[str] | None = None
    ready_line: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *extra: str,
        workers: int = 2,
        timeout: float = 60.0,
    ) -> CaProcess:
        args = [
            *MESHSEC,
            "ca",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--mtls-listen",
            "127.0.0.1:0",
            "--monitoring",
            "127.0.0.1:0",
            "--workers",
            str(workers),
            *extra,
        ]
        ca = cls(data_dir, args)
        ca.log_path = data_dir.parent / f"{data_dir.name}-ca.log"
        with ca.log_path.open("w") as log:
            ca.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        ca._wait_ready(timeout)
        return ca

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if not selector.select(timeout=remaining):
                    break
                line = self.process.stdout.readline()
                if not line:
                    break
                match = READY.search(line)
                if match:
                    self.ready_line = line.strip()
                    self.fields = {k: v for k, v in match.groupdict().items() if v}
                    return
        finally:
            selector.close()
        code = self.stop()
        raise RuntimeError(f"CA not ready (exit {code}); log:\n{self.log()}")

    @property
    def address(self) -> str:
        return self.fields["listen"]

    @property
    def mtls_address(self) -> str:
        return self.fields["mtls"]

    @property
    def metrics_url(self) -> str:
        return f"http://{self.fields['metrics']}/metrics"

    @property
    def root_pem(self) -> bytes:
        return (self.data_dir / "root-cert.pem").read_bytes()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def run_meshsec(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a meshsec command to completion (CLI exactly as a user types it)."""
    return subprocess.run(
        [*MESHSEC, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
