"""``meshsec up DIR [--check]``: run a directory of manifests as a local mesh.

Without ``--check``: starts everything, prints the status table and what to try next, and runs
until Ctrl-C / SIGTERM (then stops every process and removes its sockets). With ``--check``:
runs the directory's expectations and exits 0 (all as expected) or 1 — against the mesh already
running from DIR if there is one, else it brings the mesh up, checks, and stops it.
Exit codes: 0 ok; 1 an expectation failed or a component died; 2 bad manifests; 3 start-up
failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meshsec.config.errors import ConfigError
from meshsec.config.load import parse_duration
from meshsec.core.policy.diagnostics import Level

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STARTUP = 3


def _duration(flag: str, value: str) -> Any:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError([f"{flag}: {exc}"]) from None


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        directory: Annotated[
            Path, typer.Argument(help="mesh directory: manifests and expectations (YAML)")
        ],
        check: Annotated[
            bool,
            typer.Option("--check", help="run the expectations, print a table, exit 0/1"),
        ] = False,
        ready_timeout: Annotated[
            str, typer.Option("--ready-timeout", help="per start-up step")
        ] = "60s",
        token_ttl: Annotated[
            str, typer.Option("--token-ttl", help="projected token lifetime (refresh at 80%)")
        ] = "1h",  # noqa: S107 - a duration, not a secret
        cert_ttl: Annotated[
            str, typer.Option("--cert-ttl", help="workload certificate lifetime (SECRET_TTL)")
        ] = "24h",
        mounted_cert_ttl: Annotated[
            str,
            typer.Option(
                "--mounted-cert-ttl",
                help="istio.<sa> secret lifetime for mountMtlsCerts workloads (rotated at half)",
            ),
        ] = "24h",
        log_level: Annotated[
            str, typer.Option("--log-level", help="child processes' log level")
        ] = "info",
    ) -> None:
        """Run the mesh in DIR locally: token issuer, CA, and per workload agent, sidecar, app."""
        from meshsec.mesh.runtime import UpOptions

        if not directory.is_dir():
            raise ConfigError([f"{directory}: not a directory"])
        options = UpOptions(
            token_ttl=_duration("--token-ttl", token_ttl),
            workload_cert_ttl=_duration("--cert-ttl", cert_ttl),
            mounted_cert_ttl=_duration("--mounted-cert-ttl", mounted_cert_ttl),
            ready_timeout=_duration("--ready-timeout", ready_timeout).total_seconds(),
            log_level=log_level,
        )
        # A pipe or a log gets full rows; a terminal its own width.
        console = Console(width=None if sys.stdout.isatty() else 200)
        raise typer.Exit(run_up(directory, options, check=check, console=console))


def run_up(directory: Path, options: Any, *, check: bool, console: Console) -> int:
    from meshsec.mesh.errors import MeshRunningError
    from meshsec.mesh.manifests import load_mesh_plan

    plan = load_mesh_plan(directory)
    shown = [d for d in plan.diagnostics if d.level is not Level.INFO]
    for diag in shown:
        color = "red" if diag.level is Level.ERROR else "yellow"
        console.print(f"[{color}]{diag.level.value.lower()}[/] {diag}", soft_wrap=True)
    if plan.errors:
        console.print(f"[red]{len(plan.errors)} error(s) in {directory}; nothing started[/]")
        return EXIT_BAD_INPUT
    mesh_config = plan.snapshot.mesh_config
    if mesh_config.trust_domain != options.trust_domain:  # the istio ConfigMap decides
        options = replace(options, trust_domain=mesh_config.trust_domain)
    if check:
        state = _running_state(directory)
        if state is not None:
            return asyncio.run(_check_running(plan, state, console))
    try:
        return asyncio.run(_up(directory, plan, options, check=check, console=console))
    except MeshRunningError as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_STARTUP


def _running_state(directory: Path) -> dict[str, Any] | None:
    from meshsec.mesh.runtime import STATE_DIR

    path = directory / STATE_DIR / "state.json"
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


async def _check_running(plan: Any, state: dict[str, Any], console: Console) -> int:
    from meshsec.mesh.check import MeshEndpoints, run_expectations

    console.print(f"checking the mesh running from {state['mesh_dir']} (pid {state['pid']})")
    mesh = MeshEndpoints.from_state(state, plan.snapshot)
    results = await run_expectations(mesh, plan.expectations)
    return _print_results(results, console)


def _print_results(results: list[Any], console: Console) -> int:
    table = Table(title="expectations")
    for col in ("from", "to", "expect", "got", "", "detail"):
        table.add_column(col, no_wrap=col != "detail")
    for r in results:
        e = r.expectation
        mark = "[green]PASS[/]" if r.ok else "[red]FAIL[/]"
        table.add_row(
            e.source,
            f"{e.target}{e.path if e.path != '/' else ''}",
            e.expect,
            r.got,
            mark,
            r.detail,
        )
    console.print(table)
    failed = [r for r in results if not r.ok]
    if not results:
        console.print("[yellow]no expectations declared (kind: Expectations)[/]")
    elif failed:
        console.print(f"[red]{len(failed)} of {len(results)} expectation(s) failed[/]")
    else:
        console.print(f"[green]all {len(results)} expectation(s) met[/]")
    return EXIT_FAILED if failed else 0


async def _up(directory: Path, plan: Any, options: Any, *, check: bool, console: Console) -> int:
    from meshsec.mesh.check import MeshEndpoints, run_expectations
    from meshsec.mesh.errors import StartupError
    from meshsec.mesh.runtime import MeshRuntime

    started = asyncio.get_running_loop().time()

    def progress(message: str) -> None:
        elapsed = asyncio.get_running_loop().time() - started
        console.print(f"[green]✓[/] {message} [dim]+{elapsed:.1f}s[/]", soft_wrap=True)

    runtime = MeshRuntime(directory, plan, options, progress=progress, environ=dict(os.environ))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    console.print(
        f"[bold]meshsec up[/] {directory}: {len(plan.workloads)} workload(s) in "
        f"{len(plan.namespaces)} namespace(s)"
    )
    code = 0
    try:
        start = asyncio.ensure_future(runtime.start())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([start, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
            console.print("interrupted during start-up")
            return 130
        stopper.cancel()
        start.result()
        await _print_status(runtime, console)
        if check:
            results = await run_expectations(MeshEndpoints.from_runtime(runtime), plan.expectations)
            code = _print_results(results, console)
        else:
            _print_next(runtime, directory, console)
            assert runtime.failed is not None
            waiter = asyncio.ensure_future(stop.wait())
            failed: asyncio.Future[Any] = runtime.failed
            await asyncio.wait([failed, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if runtime.failed.done():
                _print_failure(runtime.failed.result(), console)
                code = EXIT_FAILED
    except StartupError as exc:
        _print_failure(exc, console)
        code = EXIT_STARTUP
    finally:
        console.print("stopping the mesh…")
        await runtime.stop()
        console.print("[green]✓[/] stopped: every process ended, sockets removed")
    return code


def _print_failure(exc: Any, console: Console) -> None:
    console.print(f"[red]✗ {exc.owner}[/]: {exc.what}", soft_wrap=True)
    if exc.log_tail:
        console.print("[dim]--- last lines of its log ---[/]")
        console.print(exc.log_tail, markup=False, highlight=False, soft_wrap=True)


async def _print_status(runtime: Any, console: Console) -> None:
    from meshsec.mesh.status import collect_status

    if runtime.plan.declared_clusters:
        _print_clusters(runtime, console)
    rows = await collect_status(runtime, datetime.now(UTC))
    table = Table(title="workloads")
    columns = ["workload", "SPIFFE ID", "certs", "cert serial", "expires in", "mTLS mode per port"]
    for col in columns:
        table.add_column(col, no_wrap=col != "mTLS mode per port")
    for row in rows:
        serial, modes = row.serial, row.modes
        if row.reason:
            serial = f"[red]{row.serial}[/]"
            modes = f"not ready: the CA answers {row.reason}"
        table.add_row(row.workload, row.spiffe_id, row.cert_model, serial, row.expires_in, modes)
    console.print(table)


def _print_clusters(runtime: Any, console: Console) -> None:
    table = Table(title="clusters")
    for col in ("cluster", "role", "network", "certificates from", "API server", "remote secret"):
        table.add_column(col, no_wrap=True)
    for c in runtime.control.clusters.values():
        issuing = c.issuing
        root = "shared root" if issuing.cacerts is not None else "own root"
        ca = f"{issuing.name}'s CA {issuing.ca_addr} ({root})"
        if c.spec.is_primary:
            attached = "-"
        elif c.remote_secret is not None:
            attached = f"in {issuing.name}'s CA: {c.remote_secret.name}"
        else:
            attached = "[yellow]none (create-remote-secret not run)[/]"
        table.add_row(c.name, c.spec.role, c.spec.network, ca, c.api_url or "-", attached)
    console.print(table)


def _print_next(runtime: Any, directory: Path, console: Console) -> None:
    from meshsec.cli.operator_output import cli_command
    from meshsec.mesh.refs import format_ref

    cli = cli_command()
    mesh = f"--mesh {directory}"
    qualified = runtime.plan.qualified
    refs = [
        format_ref(r.entry.name, r.entry.namespace, r.cluster, qualified=qualified)
        for r in runtime.runs
    ]
    first = runtime.runs[0] if runtime.runs else None
    mounted = next((r for r in runtime.runs if r.cert_model == "mounted"), None)
    lines = ["", "[bold]Try next[/] (in another shell; Ctrl-C here stops the mesh)"]
    lines.append(f"  {cli} up {directory} --check     # the expectations, against this mesh")
    lines.append(f"  {cli} status {mesh}")
    if first is not None:
        lines.append(f"  {cli} proxy-config secret {refs[0]} {mesh}")
        lines.append(f"  openssl x509 -noout -serial -enddate -in {first.cert_dir}/cert-chain.pem")
        target = mounted or first
        lines.append(f"  {cli} describe {refs[runtime.runs.index(target)]} {mesh}")
        services = runtime.plan.snapshot.services
        if len(refs) > 1 and services and services[-1].ports:
            svc = services[-1]
            lines.append(
                f"  {cli} check {refs[0]} {svc.meta.name}.{svc.namespace}:{svc.ports[0].port} "
                f"{mesh}"
            )
            lines.append(
                f"  curl -x http://127.0.0.1:{first.http_proxy_port} "
                f"http://{svc.meta.name}.{svc.namespace}.svc.cluster.local:{svc.ports[0].port}/"
                f"   # as {first.entry.name}'s app does"
            )
    for c in runtime.control.remotes:
        watched = c.issuing.remote_secrets_dir
        if c.remote_secret is None and watched is not None:
            lines.append(
                f"  {cli} create-remote-secret --cluster {c.cluster_dir} --name {c.name} "
                f"-o {watched / (c.name + '.yaml')}   # attach {c.name} to {c.issuing.name}'s CA"
            )
    lines.append(f"  edit a policy under {directory}: the sidecars apply it within a second")
    lines.append(f"  logs, certificates, state: {runtime.state_dir}")
    console.print("\n".join(lines), soft_wrap=True)
