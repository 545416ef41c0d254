"""``meshsec demo``: one CA, one certificate, over the real API (``make run`` is ``meshsec up``).

Creates a local cluster, starts the real CA (``meshsec ca serve`` in a subprocess, TLS, all
cores), mints a service-account token for ``default/demo``, makes a key and CSR locally, calls
``CreateCertificate`` over gRPC, verifies the returned chain against the CA's root, prints the
certificate as a table with what to try next, and stops the CA.
"""

from __future__ import annotations

import asyncio
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meshsec.agent.caclient import CaClient
from meshsec.cluster import TokenRequest, init_cluster_dir, load_cluster_signer, mint_token
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import (
    KeySpec,
    build_csr,
    describe_public_key,
    encode_csr_pem,
    encode_private_key_pem,
    generate_private_key,
    parse_certificates_pem,
)
from meshsec.core.pki.bundle import TrustBundle, certificate_fingerprint
from meshsec.core.pki.verify import verify_svid
from meshsec.errors import MeshsecError
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, write_atomic

_READY = re.compile(r"meshsec ca ready: listening on (\S+) \(tls\)")


class DemoError(MeshsecError):
    pass


@dataclass
class _Ca:
    process: subprocess.Popen[str]
    address: str
    ready_line: str
    log_path: Path


def _start_ca(state: Path, cluster: Path, timeout: float = 60.0) -> _Ca:
    log_path = state / "ca.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshsec",
            "ca",
            "serve",
            "--data-dir",
            str(state / "ca"),
            "--cluster",
            str(cluster),
            "--listen",
            "127.0.0.1:0",
            "--mtls-listen",
            "127.0.0.1:0",
            "--monitoring",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    log.close()
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        line = process.stdout.readline()
        if not line:  # the CA exited
            break
        match = _READY.search(line)
        if match:
            selector.close()
            return _Ca(process, match.group(1), line.strip(), log_path)
    selector.close()
    _stop_ca(process)
    raise DemoError(f"the CA did not become ready; its log is {log_path}")


def _stop_ca(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_demo(state: Path, console: Console) -> None:
    state.mkdir(parents=True, exist_ok=True)
    cluster_dir = state / "cluster1"
    if not (cluster_dir / "cluster.yaml").exists():
        init_cluster_dir(cluster_dir, name="cluster1", now=datetime.now(UTC))
    signer = load_cluster_signer(cluster_dir)
    console.print(f"[bold]1.[/] local cluster [cyan]cluster1[/] ({cluster_dir})")
    ca = _start_ca(state, cluster_dir)
    try:
        console.print(f"[bold]2.[/] CA started: {ca.ready_line}", soft_wrap=True)
        token = mint_token(
            signer,
            TokenRequest("default", "demo", ttl=timedelta(minutes=10)),
            now=datetime.now(UTC),
        )
        console.print("[bold]3.[/] minted a service-account token for [cyan]default/demo[/]")
        key = generate_private_key(KeySpec.EC_P256)
        # The CSR asks for an identity; the CA ignores it and uses the token's.
        asked = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/demo")
        csr = encode_csr_pem(build_csr(key, asked))
        root_pem = (state / "ca" / "root-cert.pem").read_bytes()

        async def fetch() -> list[str]:
            async with CaClient(ca.address, root_pem=root_pem) as client:
                return await client.fetch_certificate_chain(
                    csr, token=token, ttl=timedelta(hours=24)
                )

        chain = asyncio.run(fetch())
        console.print(
            f"[bold]4.[/] CreateCertificate over gRPC/TLS to {ca.address}: {len(chain)} elements"
        )
    finally:
        _stop_ca(ca.process)
    certs = [c for element in chain[:-1] for c in parse_certificates_pem(element)]
    bundle = TrustBundle.parse_pem(chain[-1])
    identity = verify_svid(certs, bundle, now=datetime.now(UTC))
    leaf = certs[0]
    out = state / "workload"
    out.mkdir(exist_ok=True)
    write_atomic(out / "cert-chain.pem", "".join(chain[:-1]).encode(), PUBLIC_MODE)
    write_atomic(out / "key.pem", encode_private_key_pem(key), KEY_MODE)
    write_atomic(out / "root-cert.pem", chain[-1].encode(), PUBLIC_MODE)
    console.print("[bold]5.[/] chain verified against the CA root; CA stopped\n")

    table = Table(title="certificate issued by meshsec ca", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("SPIFFE ID", str(identity))
    table.add_row("serial", f"{leaf.serial_number:032x}")
    table.add_row("not before", leaf.not_valid_before_utc.isoformat())
    table.add_row("not after", leaf.not_valid_after_utc.isoformat())
    table.add_row("issuer", leaf.issuer.rfc4514_string())
    middle = len(chain) - 2
    table.add_row("chain length", f"{len(chain)} (leaf, {middle} intermediate(s), root bundle)")
    table.add_row("key type", describe_public_key(leaf.public_key()))
    table.add_row("root", f"sha256:{certificate_fingerprint(bundle.certificates[0])[:32]}…")
    table.add_row("files", str(out))
    console.print(table)
    ca_dir = state / "ca"
    console.print(
        "\n[bold]Try next[/]\n"
        f"  openssl verify -CAfile {out}/root-cert.pem {out}/cert-chain.pem\n"
        f"  meshsec cert inspect {out}/cert-chain.pem\n"
        f"  meshsec ca issued --data-dir {ca_dir}\n"
        f"  meshsec ca serve --data-dir {ca_dir} --cluster {cluster_dir}   "
        "# then, in another shell:\n"
        f"  meshsec token mint --cluster {cluster_dir} --namespace default "
        "--service-account sleep",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        state_dir: Annotated[
            Path, typer.Option("--state-dir", help="where the demo keeps its cluster and CA")
        ] = Path(".meshsec/demo"),
    ) -> None:
        """Start a CA, issue a certificate for default/demo over the real API, show it."""
        try:
            run_demo(state_dir, Console())
        except DemoError as exc:
            typer.secho(f"error: {exc}", err=True, fg="red")
            raise typer.Exit(3) from None


__all__ = ["run_demo"]
