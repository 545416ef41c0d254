"""The part of a Kubernetes API server a mesh CA uses, for one local cluster, over HTTPS.

Routes (Kubernetes' paths and shapes, so the official ``kubernetes`` client works unchanged)::

    POST /apis/authentication.k8s.io/v1/tokenreviews   TokenReview (bearer auth + RBAC)
    GET  /.well-known/openid-configuration             OIDC discovery (public)
    GET  /openid/v1/jwks                               the service-account signing keys (public)
    GET  /healthz, /readyz, /livez                     "ok"

Callers authenticate with a bearer token this cluster issued whose ``aud`` names one of the API
server's audiences (``apiAudiences`` in ``cluster.yaml``; default the issuer): no or a bad token
→ 401. Creating a TokenReview also needs the caller's service account in the ``rbac`` allow list
(by default Istio's ``istio-system/istio-reader-service-account`` and ``istio-system/istiod``)
→ else 403 with kube-apiserver's message. Errors are ``Status`` objects.

The server is ``http.server`` (HTTP/1.1, keep-alive) on a TLS socket whose handshake runs in the
connection's thread; request bodies are capped (:data:`MAX_BODY_BYTES`), header sizes and counts
are capped by ``http.server``, idle connections time out and at most ``max_connections`` are
served at once (others are closed at accept).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from meshsec.cluster.directory import (
    ClusterTrust,
    build_jwk,
    load_cluster_trust,
    read_cluster_meta,
)
from meshsec.cluster.errors import ClusterError
from meshsec.cluster.review import ApiPolicy, TokenInvalid, parse_api_policy, review_token
from meshsec.cluster.serving import build_serving_certificate, load_or_create_serving_ca

log = logging.getLogger(__name__)

TOKENREVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
HEALTH_PATHS = ("/healthz", "/readyz", "/livez")
URL_FILE = "apiserver.url"
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT = 30.0


def build_status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A Kubernetes ``Status`` (``kind: Status``, ``status: Failure``)."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        status["details"] = details
    return status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], api: ClusterApiServer, family: int) -> None:
        self.address_family = family
        self.api = api
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        wrapped = self.api.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, addr

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.api.slots.acquire(blocking=False)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.api.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshsec-kube-apiserver"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (bad request line, headers too long/many) as Status JSON.
        reason = (
            HTTPStatus(code).phrase.replace(" ", "")
            if code in HTTPStatus._value2member_map_
            else "Error"
        )
        self.close_connection = True
        self._send_json(code, build_status(code, reason, message or HTTPStatus(code).phrase))

    def _send_json(self, code: int, payload: dict[str, Any]) -> None:
        data = (json.dumps(payload) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _not_found(self) -> None:
        self._send_json(
            404, build_status(404, "NotFound", "the server could not find the requested resource")
        )

    def do_GET(self) -> None:
        api = self.server.api
        path = self.path.split("?", 1)[0]
        if path == DISCOVERY_PATH:
            self._send_json(200, api.discovery_document())
        elif path == JWKS_PATH:
            self._send_json(200, api.jwks_document())
        elif path in HEALTH_PATHS:
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == TOKENREVIEW_PATH:
            self._send_json(
                405,
                build_status(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ),
            )
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if body is None:
            return
        if path != TOKENREVIEW_PATH:
            return self._not_found()
        code, payload = self.server.api.handle_tokenreview(self.headers.get("Authorization"), body)
        self._send_json(code, payload)

    def do_PUT(self) -> None:
        self._refuse_method()

    do_DELETE = do_PATCH = do_PUT

    def _refuse_method(self) -> None:
        self.close_connection = True
        self._send_json(
            405,
            build_status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ),
        )

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send_json(
                411,
                build_status(
                    411, "LengthRequired", "chunked bodies are not accepted; send Content-Length"
                ),
            )
            return None
        length_text = self.headers.get("Content-Length", "0")
        if not length_text.isdigit():
            self.close_connection = True
            self._send_json(400, build_status(400, "BadRequest", "invalid Content-Length"))
            return None
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(
                413,
                build_status(
                    413,
                    "RequestEntityTooLarge",
                    f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes",
                ),
            )
            return None
        return self.rfile.read(length) if length else b""


class ClusterApiServer:
    """One local cluster's API server, in a background thread (``start()`` / ``stop()``)."""

    def __init__(
        self,
        directory: Path,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        tls_sans: tuple[str, ...] = (),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_connections: int = 256,
        write_url_file: bool = True,
    ) -> None:
        self.directory = directory
        self.trust: ClusterTrust = load_cluster_trust(directory)
        meta = read_cluster_meta(directory)
        self.policy: ApiPolicy = parse_api_policy(
            meta, self.trust.issuer, directory / "cluster.yaml"
        )
        self._ca = load_or_create_serving_ca(directory, self.trust.name, now=now())
        self._listen = listen
        self._sans = tuple(s for s in (listen[0], *tls_sans) if s not in ("", "0.0.0.0", "::"))  # noqa: S104
        self._now = now
        self._write_url_file = write_url_file
        self.slots = threading.BoundedSemaphore(max_connections)
        self.tls = self._tls_context()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reviews = 0  # TokenReviews answered (any result)
        self._reviews_lock = threading.Lock()

    def _tls_context(self) -> ssl.SSLContext:
        chain, key = build_serving_certificate(self._ca, self._sans, now=self._now())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory(prefix="meshsec-apiserver-") as tmp:
            cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert_file.write_bytes(chain)
            key_file.touch(mode=0o600)
            key_file.write_bytes(key)
            ctx.load_cert_chain(cert_file, key_file)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    @property
    def ca_pem(self) -> bytes:
        return self._ca.cert_pem

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._listen[0]
        if host in ("", "0.0.0.0"):  # noqa: S104
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"https://[{host}]:{self.port}" if ":" in host else f"https://{host}:{self.port}"

    def start(self) -> ClusterApiServer:
        family = socket.AF_INET6 if ":" in self._listen[0] else socket.AF_INET
        try:
            self._server = _Server(self._listen, self, family)
        except OSError as exc:
            raise ClusterError(
                f"cannot listen on {self._listen[0]}:{self._listen[1]}: {exc.strerror}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"apiserver-{self.trust.name}",
            daemon=True,
        )
        self._thread.start()
        if self._write_url_file:
            from meshsec.runtime.files import PUBLIC_MODE, write_atomic

            write_atomic(self.directory / URL_FILE, (self.url + "\n").encode(), PUBLIC_MODE)
        log.info("cluster %s API server listening on %s", self.trust.name, self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._write_url_file:
            with contextlib.suppress(FileNotFoundError):
                url_file = self.directory / URL_FILE
                if url_file.read_text().strip() == (self.url if self._server else ""):
                    url_file.unlink()
        self._server = None

    def __enter__(self) -> ClusterApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ handlers

    def discovery_document(self) -> dict[str, Any]:
        return {
            "issuer": self.trust.issuer,
            "jwks_uri": f"{self.url}{JWKS_PATH}",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted(
                {alg for alg, _ in self.trust.keys.values()}
            ),
        }

    def jwks_document(self) -> dict[str, Any]:
        return {"keys": [build_jwk(key, kid, alg) for kid, (alg, key) in self.trust.keys.items()]}

    def handle_tokenreview(
        self, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for ``POST .../tokenreviews``."""
        now = self._now()
        if (
            not authorization
            or not authorization.startswith("Bearer ")
            or not authorization[7:].strip()
        ):
            return 401, build_status(401, "Unauthorized", "Unauthorized")
        try:
            caller = review_token(
                self.trust, authorization[7:].strip(), audiences=self.policy.api_audiences, now=now
            )
        except TokenInvalid as exc:
            log.info("cluster %s: unauthenticated API call refused: %s", self.trust.name, exc)
            return 401, build_status(401, "Unauthorized", "Unauthorized")
        if not self.policy.may_create_tokenreviews(caller):
            log.warning(
                "cluster %s: %s may not create tokenreviews", self.trust.name, caller.username
            )
            return 403, build_status(
                403,
                "Forbidden",
                f'tokenreviews.authentication.k8s.io is forbidden: User "{caller.username}" cannot '
                'create resource "tokenreviews" in API group "authentication.k8s.io" at the '
                "cluster scope",
                group="authentication.k8s.io",
                kind="tokenreviews",
            )
        try:
            review = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, build_status(400, "BadRequest", f"the request body is not JSON: {exc}")
        if not isinstance(review, dict) or review.get("kind") != "TokenReview":
            return 400, build_status(400, "BadRequest", "the request body must be a TokenReview")
        if review.get("apiVersion") != "authentication.k8s.io/v1":
            return 400, build_status(
                400,
                "BadRequest",
                f"apiVersion {str(review.get('apiVersion'))[:100]!r} is not "
                "authentication.k8s.io/v1",
            )
        spec = review.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        token = spec.get("token")
        if not isinstance(token, str) or not token:
            return 400, build_status(
                400, "BadRequest", "token is required for TokenReview in authentication.k8s.io"
            )
        wanted = spec.get("audiences") or list(self.policy.api_audiences)
        if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
            return 400, build_status(400, "BadRequest", "spec.audiences must be a list of strings")
        with self._reviews_lock:
            self.reviews += 1
        status: dict[str, Any]
        try:
            user = review_token(self.trust, token, audiences=wanted, now=now)
        except TokenInvalid as exc:
            status = {"user": {}, "error": str(exc)}
            log.info("cluster %s: review for %s: %s", self.trust.name, caller.username, exc)
        else:
            status = {
                "authenticated": True,
                "user": user.to_json(),
                "audiences": list(user.audiences),
            }
            log.info(
                "cluster %s: review for %s: authenticated %s",
                self.trust.name,
                caller.username,
                user.username,
            )
        return 201, {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"token": token, **({"audiences": wanted} if spec.get("audiences") else {})},
            "status": status,
        }
