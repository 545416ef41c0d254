"""Fakes for the operator-command tests: a state.json writer and canned admin endpoints served by
a real HTTP server on a loopback port 0 (one per test)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class FakeAdmin:
    """``routes[path] = (status, body)``; records the paths asked for."""

    routes: dict[str, tuple[int, str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    addr: str = ""

    def json(self, path: str, document: Any, status: int = 200) -> None:
        self.routes[path] = (status, json.dumps(document))

    def text(self, path: str, body: str, status: int = 200) -> None:
        self.routes[path] = (status, body)


@contextmanager
def serve_fake_admin() -> Iterator[FakeAdmin]:
    admin = FakeAdmin()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            admin.requests.append(self.path)
            status, body = admin.routes.get(self.path, (404, "not found\n"))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    admin.addr = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield admin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_addr() -> str:
    """A loopback address nothing listens on (bound then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def workload_entry(
    name: str,
    namespace: str,
    *,
    sa: str | None = None,
    labels: dict[str, str] | None = None,
    agent: str | None = None,
    proxy: str | None = None,
    ports: list[dict[str, Any]] | None = None,
    cert_model: str = "csr",
) -> dict[str, Any]:
    account = sa or name
    return {
        "name": name,
        "namespace": namespace,
        "service_account": account,
        "spiffe_id": f"spiffe://cluster.local/ns/{namespace}/sa/{account}",
        "cluster": "cluster1",
        "cert_model": cert_model,
        "agent_status": agent,
        "proxy_admin": proxy,
        "http_proxy": None,
        "ports": ports or [],
        "cert_dir": None,
        "log_dir": None,
        "labels": labels or {"app": name},
    }


def write_state(
    mesh_dir: Path,
    workloads: list[dict[str, Any]],
    *,
    ca_addr: str | None = None,
    root_pem_path: str | None = None,
    pid: int | None = None,
) -> Path:
    state_dir = mesh_dir / ".meshsec"
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "state.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "mesh_dir": str(mesh_dir),
                "pid": os.getpid() if pid is None else pid,
                "started_at": "2026-11-23T05:00:00+00:00",
                "trust_domain": "cluster.local",
                "ca": {
                    "addr": ca_addr,
                    "monitoring": None,
                    "data_dir": None,
                    "root_pem_path": root_pem_path,
                },
                "workloads": workloads,
            }
        )
    )
    return path


def agent_secrets(
    serial: str,
    *,
    root_fp: str = "aa" * 32,
    root_serial: str = "1" * 32,
    not_after: str = "2099-01-01T00:00:00+00:00",
    spiffe_id: str = "spiffe://cluster.local/ns/ns/sa/sa",
) -> dict[str, Any]:
    """A /debug/secrets document as the agent serves it."""
    return {
        "now": "2026-11-23T05:00:00+00:00",
        "resources": [
            {
                "resource_name": "default",
                "type": "Cert Chain",
                "status": "ACTIVE",
                "spiffe_id": spiffe_id,
                "serial": serial,
                "not_before": "2026-11-23T04:58:00+00:00",
                "not_after": not_after,
                "valid": True,
                "source": "ca",
                "key_fingerprint": "x",
                "version": 1,
                "created_at": "2026-11-23T05:00:00+00:00",
            },
            {
                "resource_name": "ROOTCA",
                "type": "CA",
                "status": "ACTIVE",
                "subject": "O=cluster.local",
                "fingerprint": root_fp,
                "serial": root_serial,
                "not_before": "2026-01-01T00:00:00+00:00",
                "not_after": "2036-01-01T00:00:00+00:00",
                "valid": True,
                "version": 1,
            },
        ],
    }
