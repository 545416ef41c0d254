"""``meshsec up --check``: run the scenario's expectations against the running mesh.

* from a workload: an HTTP GET through that workload's sidecar (the same outbound HTTP proxy its
  application uses as ``HTTP_PROXY``), so the request takes the real path: client sidecar →
  client TLS (DestinationRule / auto mTLS, secure naming) → server sidecar (PeerAuthentication
  mode, AuthorizationPolicy) → application;
* from ``outside``: a plaintext GET straight to an endpoint of the service (what a client
  without a sidecar does when it dials the pod IP).

* a ``certificate`` expectation: :mod:`meshsec.mesh.cert_probe` (the agent's certificate, the
  CA ledgers, a fresh CSR with the workload's token).

Outcome: the application answered → ``allowed``; ``403 RBAC: access denied`` → ``denied``;
the connection was refused, reset or closed before any response (a plaintext client into
STRICT, a failed handshake or secure-naming check — the sidecar answers ``503 upstream connect
error``) → ``refused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.mesh.cert_probe import CertificateSubject, check_certificate
from meshsec.mesh.expectations import CERTIFICATE, OUTSIDE, Expectation, workload_key
from meshsec.mesh.refs import format_ref
from meshsec.mesh.runtime import MeshRuntime
from meshsec.mesh.state import REFUSED_EXPECTED
from meshsec.mesh.topology import DEFAULT_CLUSTER
from meshsec.proxy.registry import (
    LOOPBACK,
    PortBinding,
    Registry,
    WorkloadEntry,
    resolve_service,
)

RBAC_DENIED = "RBAC: access denied"


@dataclass(frozen=True)
class CheckResult:
    expectation: Expectation
    got: str  # allowed | denied | refused
    detail: str

    @property
    def ok(self) -> bool:
        return self.got == self.expectation.expect


def classify(status: int, body: str, error: str) -> tuple[str, str]:
    """``(verdict, detail)`` from what a GET produced."""
    if status == 0:
        return "refused", error or "connection closed before a response"
    if status == 403 and RBAC_DENIED in body:
        return "denied", f"403 {RBAC_DENIED}"
    if status == 503 and "upstream connect error" in body:
        return "refused", "503 from the client sidecar: upstream connect error"
    return "allowed", f"{status} {_summary(body)}".strip()


def _summary(body: str) -> str:
    """Who answered: the ``workload`` of a JSON answer (the example apps) and the client identity
    its sidecar verified (the ``URI=`` of the XFCC header the app echoes), else the first line."""
    with contextlib.suppress(ValueError, AttributeError):
        answer = json.loads(body)
        if isinstance(answer, dict) and "workload" in answer:
            peer = _xfcc_uri(str(answer.get("client", "")))
            return f"from {answer['workload']}" + (f" (saw client {peer})" if peer else "")
    return body.strip().splitlines()[0][:80] if body.strip() else ""


def _xfcc_uri(xfcc: str) -> str:
    """The client's URI SAN from an ``x-forwarded-client-cert`` value (last element)."""
    element = xfcc.split(",")[-1]
    for part in element.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "URI":
            return value.strip().strip('"')[:120]
    return ""


async def _request(host: str, port: int, raw: bytes, wait: float) -> tuple[int, str, str]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait)
    except (OSError, TimeoutError) as exc:
        return 0, "", f"connect: {exc.strerror if isinstance(exc, OSError) else 'timed out'}"
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), wait)
    except (OSError, TimeoutError) as exc:
        return 0, "", f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        shown = "connection closed without a response" if not data else "not an HTTP response"
        return 0, "", shown
    return int(parts[1]), body.decode("utf-8", "replace"), ""


@dataclass(frozen=True)
class MeshEndpoints:
    """What the checks need from a running mesh: the registry, the live snapshot (Services),
    each workload's sidecar HTTP proxy port and what its certificate probe needs — both keyed
    ``name.namespace@cluster`` (:func:`meshsec.mesh.expectations.workload_key`)."""

    snapshot: PolicySnapshot
    registry: Registry
    http_proxies: Mapping[str, int]
    certificates: Mapping[str, CertificateSubject] = field(default_factory=dict)
    log_dirs: Mapping[str, Path] = field(default_factory=dict)

    @classmethod
    def from_runtime(cls, runtime: MeshRuntime) -> MeshEndpoints:
        return cls.from_state(runtime.state(), runtime.plan.snapshot)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], snapshot: PolicySnapshot) -> MeshEndpoints:
        """From a running mesh's ``state.json`` (see MESH_STATE.md)."""
        entries = []
        proxies: dict[str, int] = {}
        subjects: dict[str, CertificateSubject] = {}
        logs: dict[str, Path] = {}
        qualified = len(state.get("clusters") or ()) > 1
        for w in state["workloads"]:
            cluster = str(w.get("cluster") or DEFAULT_CLUSTER)
            key = workload_key(w["name"], w["namespace"], cluster)
            if w.get("certificate") != REFUSED_EXPECTED:  # never ready: no endpoint
                entries.append(
                    WorkloadEntry(
                        w["name"],
                        w["namespace"],
                        w["service_account"],
                        dict(w.get("labels") or {}),
                        tuple(PortBinding.from_json(p) for p in w["ports"]),
                        state.get("trust_domain", "cluster.local"),
                        cluster=cluster if qualified else "",
                    )
                )
            proxies[key] = int(w["http_proxy"].rpartition(":")[2])
            shown = format_ref(w["name"], w["namespace"], cluster, qualified=qualified)
            subjects[key] = CertificateSubject.from_state(w, state, shown)
            if w.get("log_dir"):
                logs[key] = Path(w["log_dir"])
        return cls(snapshot, Registry(tuple(entries)), proxies, subjects, logs)


async def run_expectation(mesh: MeshEndpoints, exp: Expectation, wait: float = 10.0) -> CheckResult:
    if exp.kind == CERTIFICATE:
        subject = mesh.certificates.get(exp.source_key)
        if subject is None:
            return CheckResult(exp, "refused", f"workload {exp.source} is not running")
        got, detail = await check_certificate(subject, exp.expect, datetime.now(UTC))
        return CheckResult(exp, got, detail)
    if exp.source == OUTSIDE:
        target = resolve_service(
            mesh.snapshot, mesh.registry, exp.host, exp.port, client_namespace=exp.namespace
        )
        if target is None or not target.endpoints:
            return CheckResult(exp, "refused", "no endpoint for the service")
        _, binding = target.endpoints[0]
        raw = (
            f"GET {exp.path} HTTP/1.1\r\nHost: {exp.host}:{exp.port}\r\nConnection: close\r\n\r\n"
        ).encode()
        status, body, error = await _request(LOOPBACK, binding.inbound, raw, wait)
        got, detail = classify(status, body, error)
        return CheckResult(exp, got, f"plaintext to {LOOPBACK}:{binding.inbound}: {detail}")
    proxy = mesh.http_proxies.get(exp.source_key)
    if proxy is None:
        return CheckResult(exp, "refused", f"workload {exp.source} is not running")
    raw = (
        f"GET http://{exp.host}:{exp.port}{exp.path} HTTP/1.1\r\n"
        f"Host: {exp.host}:{exp.port}\r\nConnection: close\r\n\r\n"
    ).encode()
    status, body, error = await _request(LOOPBACK, proxy, raw, wait)
    got, detail = classify(status, body, error)
    if got == "refused" and status == 503:
        why = _upstream_failure(mesh.log_dirs.get(exp.source_key), f"{exp.host}:{exp.port}")
        detail += f" ({why})" if why else ""
    return CheckResult(exp, got, f"via its sidecar: {detail}")


def _upstream_failure(log_dir: Path | None, authority: str) -> str:
    """Why the client sidecar could not connect (e.g. ``CERTIFICATE_VERIFY_FAILED``): the end of
    its last ``outbound http <authority>`` warning in ``proxy.log``; "" if none is found."""
    if log_dir is None:
        return ""
    try:
        with (log_dir / "proxy.log").open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(tail):
        if f"outbound http {authority} " in line and "unavailable: " in line:
            return line.rpartition("unavailable: ")[2].strip()[:120]
    return ""


async def run_expectations(
    mesh: MeshEndpoints, expectations: Sequence[Expectation]
) -> list[CheckResult]:
    return list(await asyncio.gather(*(run_expectation(mesh, e) for e in expectations)))


__all__ = ["CheckResult", "MeshEndpoints", "classify", "run_expectation", "run_expectations"]
