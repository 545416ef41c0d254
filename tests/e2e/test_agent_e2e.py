"""Real processes: ``meshsec ca serve`` + ``meshsec agent run`` + py-spiffe and openssl clients.

Covers the whole path an Istio pod takes: projected token → CA over TLS (root from file, server
name istiod.istio-system.svc, clusterid) → local key + CSR → SDS / Workload API / files, and a
real-time rotation with a short SECRET_TTL seen by py-spiffe's X509Source.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from spiffe import WorkloadApiClient, X509Source

pytestmark = pytest.mark.e2e

MESHSEC = [sys.executable, "-m", "meshsec"]


class Proc:
    """A child process whose output is collected by a thread; ``wait_for(regex)`` is bounded."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, within: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._thread.is_alive()
                ):
                    raise AssertionError(f"{pattern!r} not seen; output:\n{''.join(self.lines)}")
                self._cond.wait(min(remaining, 0.5))

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._thread.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mse-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPIFFE_", "SECRET_"))}
    env.update(extra)
    return env


@pytest.fixture
def ca(workdir: Path) -> Iterator[tuple[Proc, str, str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MESHSEC, *args], cwd=workdir, check=True, capture_output=True, text=True
        )

    run("cluster", "init", "cl1", "--name", "Kubernetes")
    token = run(
        "token", "mint", "--cluster", "cl1", "--namespace", "shop",
        "--service-account", "cart", "--audience", "istio-ca", "--ttl", "1h",
    ).stdout.strip()  # fmt: skip
    (workdir / "istio-token").write_text(token + "\n")
    proc = Proc(
        [*MESHSEC, "ca", "serve", "--data-dir", "ca", "--listen", "127.0.0.1:0",
         "--monitoring", "127.0.0.1:0", "--cluster", "cl1", "--workers", "1"],
        _env(MESHSEC_CA_MTLS_LISTEN="127.0.0.1:0"),
        workdir,
    )  # fmt: skip
    try:
        ready = proc.wait_for(r"listening on (\S+) \(tls\) mtls (\S+)")
        (workdir / "root-cert.pem").write_text(run("ca", "root", "--data-dir", "ca").stdout)
        yield proc, ready.group(1), ready.group(2)
    finally:
        proc.stop()


def _start_agent(workdir: Path, ca_addr: str, mtls_addr: str, **env: str) -> tuple[Proc, str]:
    agent = Proc(
        [*MESHSEC, "agent", "run", "--ca-addr", ca_addr, "--ca-root", "root-cert.pem",
         "--token-file", "istio-token", "--cluster-id", "Kubernetes",
         "--sds-socket", str(workdir / "sds.sock"),
         "--workload-socket", f"unix://{workdir / 'wl.sock'}",
         "--output-certs", "out", "--status", "127.0.0.1:0", "--ca-mtls-addr", mtls_addr],
        _env(POD_NAMESPACE="shop", SERVICE_ACCOUNT="cart", ECC_SIGNATURE_ALGORITHM="ECDSA", **env),
        workdir,
    )  # fmt: skip
    status = agent.wait_for(r"status on (http://\S+)").group(1)
    agent.wait_for(r"workload certificate spiffe://cluster.local/ns/shop/sa/cart serial=")
    return agent, status


def test_ca_agent_pyspiffe_openssl(ca: tuple[Proc, str, str], workdir: Path) -> None:
    _, ca_addr, mtls_addr = ca
    agent, status = _start_agent(workdir, ca_addr, mtls_addr)
    try:
        # `meshsec agent run` re-execs into the lean entry point: same PID, no CLI framework
        pid = agent.popen.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:4] == [b"-m", b"meshsec.agent", b"run"], cmdline
        assert b"_pydantic_core" not in Path(f"/proc/{pid}/maps").read_bytes()
        with WorkloadApiClient(socket_path=f"unix://{workdir / 'wl.sock'}") as client:
            svid = client.fetch_x509_svid()
            assert str(svid.spiffe_id) == "spiffe://cluster.local/ns/shop/sa/cart"
            bundles = client.fetch_x509_bundles()
            bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
            assert bundle is not None
            assert len(bundle.x509_authorities) == 1
        with urllib.request.urlopen(f"{status}/healthz/ready", timeout=5) as response:  # noqa: S310
            assert response.status == 200
        out = workdir / "out"
        assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
        verify = subprocess.run(
            ["openssl", "verify", "-CAfile", out / "root-cert.pem", "-untrusted",
             out / "cert-chain.pem", out / "cert-chain.pem"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "OK" in verify.stdout

        # a second agent on the same socket: clear error, exit 2, first agent unharmed
        second = subprocess.run(
            [*MESHSEC, "agent", "run", "--ca-addr", ca_addr, "--ca-root", "root-cert.pem",
             "--sds-socket", str(workdir / "sds.sock"), "--workload-socket",
             f"unix://{workdir / 'wl2.sock'}", "--status", "127.0.0.1:0"],
            cwd=workdir, env=_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 2
        assert "already in use by a running server" in second.stderr
        assert (workdir / "sds.sock").exists()
    finally:
        assert agent.stop() == 0
    assert not (workdir / "sds.sock").exists()
    assert not (workdir / "wl.sock").exists()


def test_x509_source_sees_real_rotation(ca: tuple[Proc, str, str], workdir: Path) -> None:
    _, ca_addr, mtls_addr = ca
    agent, _ = _start_agent(workdir, ca_addr, mtls_addr, SECRET_TTL="4s")
    try:
        source = X509Source(socket_path=f"unix://{workdir / 'wl.sock'}", timeout_in_seconds=10)
        try:
            first = source.get_x509_context().default_svid.leaf.serial_number
            updated = threading.Event()
            source.subscribe_for_updates(updated.set)
            assert updated.wait(20), "no rotation seen by X509Source"
            assert source.get_x509_context().default_svid.leaf.serial_number != first
        finally:
            source.close()
    finally:
        agent.stop()
