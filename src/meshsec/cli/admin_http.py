"""Reading the components' local admin/status ports (agent ``/debug/secrets``, ``/healthz/ready``;
proxy admin) from the operator commands: plain HTTP/1.1 GET on loopback, short timeouts,
failures as :class:`AdminUnavailable` that name the address and what went wrong.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from meshsec.config.load import parse_host_port
from meshsec.errors import MeshsecError

TIMEOUT = 3.0
MAX_BODY = 8 * 1024 * 1024


class AdminUnavailable(MeshsecError):
    """A component's admin/status port did not answer (exit 3)."""

    def __init__(self, what: str, addr: str, reason: str) -> None:
        self.what = what
        self.addr = addr
        self.reason = reason
        super().__init__(f"{what} at {addr}: {reason}")


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: str


def split_address(addr: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` on loopback → (host, port); ValueError otherwise.

    The components of a local mesh listen on loopback only, so an address elsewhere in a
    state file (edited, or committed to a repository by someone else) is refused rather than
    contacted.
    """
    host, port = parse_host_port(addr, listen=False)
    if port == 0:
        raise ValueError(f"address {addr[:80]!r}: port 0 cannot be contacted")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{addr!r} is not a loopback address; refusing to contact it")
    return host, port


def fetch(what: str, addr: str, path: str, *, timeout: float = TIMEOUT) -> HttpReply:
    """GET ``http://addr/path``; any HTTP status is returned, transport failures raise."""
    try:
        host, port = split_address(addr)
    except ValueError as exc:
        raise AdminUnavailable(what, addr, str(exc)) from None
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json, text/plain"})
        response = conn.getresponse()
        body = response.read(MAX_BODY + 1)
    except ConnectionRefusedError:
        raise AdminUnavailable(what, addr, "connection refused (not running?)") from None
    except TimeoutError:
        raise AdminUnavailable(what, addr, f"no answer within {timeout:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise AdminUnavailable(what, addr, f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if len(body) > MAX_BODY:
        raise AdminUnavailable(what, addr, f"{path}: reply larger than {MAX_BODY} bytes")
    return HttpReply(response.status, body.decode("utf-8", "replace"))


def fetch_json(what: str, addr: str, path: str, *, timeout: float = TIMEOUT) -> Any:
    reply = fetch(what, addr, path, timeout=timeout)
    if reply.status != 200:
        raise AdminUnavailable(what, addr, f"GET {path} returned HTTP {reply.status}")
    try:
        return json.loads(reply.body)
    except ValueError as exc:
        raise AdminUnavailable(what, addr, f"GET {path}: not JSON ({exc})") from None


@dataclass(frozen=True)
class Reachability:
    reachable: bool
    detail: str


def probe_tls_server(
    addr: str, root_pem: bytes | None, *, timeout: float = TIMEOUT
) -> Reachability:
    """Connect to a TLS server (the CA) and, given its root, verify the chain it presents.

    The CA's serving certificate names istiod's service, not the loopback address, so the host
    name is not checked — only that the chain ends at the root it was given.
    """
    try:
        host, port = split_address(addr)
    except ValueError as exc:
        return Reachability(False, str(exc))
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Reachability(False, f"{addr}: {exc.strerror or exc}")
    with sock:
        if root_pem is None:
            return Reachability(True, f"{addr}: TCP connect ok (no root to verify TLS)")
        context = ssl.create_default_context(cadata=root_pem.decode("ascii", "replace"))
        context.check_hostname = False
        context.set_alpn_protocols(["h2"])
        try:
            with context.wrap_socket(sock, server_hostname=None) as tls:
                version = tls.version()
        except ssl.SSLCertVerificationError as exc:
            return Reachability(False, f"{addr}: TLS chain does not verify: {exc.verify_message}")
        except (ssl.SSLError, OSError) as exc:
            return Reachability(False, f"{addr}: TLS handshake failed: {exc}")
    return Reachability(True, f"{addr}: {version}, serving chain verified against its root")
