"""A fake Kubernetes API server that answers TokenReview, on loopback HTTP.

It speaks just enough of ``POST /apis/authentication.k8s.io/v1/tokenreviews`` for the official
``kubernetes`` client: it checks the caller's bearer credential, records each review (token and
audiences) and answers with the status registered for that token (unknown tokens:
``authenticated: false``, like a real API server).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


@dataclass
class FakeTokenReviewServer:
    api_token: str = "fake-apiserver-admin-token"
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    http_status: int = 201
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def service_account(
        self,
        token: str,
        namespace: str,
        name: str,
        *,
        groups: tuple[str, ...] = ("system:serviceaccounts",),
        pod: str | None = None,
    ) -> None:
        """Register ``token`` as a valid token of ``namespace/name``."""
        extra = {}
        if pod:
            extra = {
                "authentication.kubernetes.io/pod-name": [pod],
                "authentication.kubernetes.io/pod-uid": ["uid-" + pod],
            }
        self.statuses[token] = {
            "authenticated": True,
            "user": {
                "username": f"system:serviceaccount:{namespace}:{name}",
                "uid": f"uid-{namespace}-{name}",
                "groups": [*groups, f"system:serviceaccounts:{namespace}", "system:authenticated"],
                "extra": extra,
            },
            "audiences": ["istio-ca"],
        }

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeTokenReviewServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                if self.path.split("?")[0] != REVIEW_PATH:
                    return self._send(404, {"kind": "Status", "code": 404})
                if self.headers.get("Authorization") != f"Bearer {fake.api_token}":
                    return self._send(401, {"kind": "Status", "code": 401})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                spec = body.get("spec", {})
                fake.reviews.append(spec)
                status = fake.statuses.get(spec.get("token"), {"authenticated": False})
                if fake.http_status != 201:
                    return self._send(fake.http_status, {"kind": "Status"})
                return self._send(
                    201,
                    {
                        "apiVersion": "authentication.k8s.io/v1",
                        "kind": "TokenReview",
                        "spec": spec,
                        "status": status,
                    },
                )

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def write_kubeconfig(self, path: Path, *, cluster: str = "fake") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {"server": self.url}}],
            "users": [{"name": "istiod", "user": {"token": self.api_token}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "istiod"}}],
            "current-context": cluster,
        }
        path.write_text(yaml.safe_dump(config))
        return path
