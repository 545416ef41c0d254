"""The service-account token sent to the CA, re-read from its file on every call.

Like Istio's ``DefaultTokenProvider``: whitespace-trimmed file content; a missing, unreadable or
empty file means no ``authorization`` header is sent (client-certificate renewal can still
work). Each such problem is logged with the path and counted in
``istio_agent_token_read_failures_total{reason}``; an expired JWT is logged and counted too (and
still sent: the CA decides). The token itself is never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from meshsec.agent.errors import CredentialError
from meshsec.agent.metrics import TOKEN_READ_FAILURES, AgentMetrics

log = logging.getLogger(__name__)


class FileTokenSource:
    """``token()`` returns the current token or None (no header); never raises."""

    def __init__(
        self, path: Path | None, metrics: AgentMetrics, now: Callable[[], datetime]
    ) -> None:
        self.path = path
        self._metrics = metrics
        self._now = now

    def token(self) -> str | None:
        if self.path is None:
            return None
        try:
            token = load_token(self.path, now=self._now())
        except CredentialError as exc:
            self._metrics.inc(TOKEN_READ_FAILURES, reason=exc.kind)
            if exc.kind == "expired":
                log.warning("%s; sending it anyway, the CA will likely reject it", exc)
                return _read_trimmed(self.path)
            log.warning("%s; calling the CA without a token (client certificate only)", exc)
            return None
        return token


def _read_trimmed(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip()


def load_token(path: Path, *, now: datetime) -> str:
    """Read and check the token file; CredentialError(kind=missing|unreadable|empty|expired)."""
    try:
        token = _read_trimmed(path)
    except FileNotFoundError:
        raise CredentialError(path, "does not exist", kind="missing") from None
    except OSError as exc:
        raise CredentialError(path, f"cannot read: {exc.strerror}", kind="unreadable") from None
    if not token:
        raise CredentialError(path, "is empty", kind="empty")
    expiry = parse_jwt_expiry(token)
    if expiry is not None and expiry <= now:
        raise CredentialError(path, f"token expired at {expiry.isoformat()}", kind="expired")
    return token


def parse_jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim if the token is a JWS compact JWT, else None. Not verified (only the CA
    can do that): the agent reads ``exp`` to warn about an expired token, nothing else. Decoded
    here rather than with PyJWT, which would load ~1.6 MB of modules into the agent for this."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = (json.loads(_b64url_decode(part)) for part in parts[:2])
    except (ValueError, binascii.Error, RecursionError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        try:
            return datetime.fromtimestamp(exp, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _b64url_decode(segment: str) -> bytes:
    if not segment or len(segment) > 1 << 16:
        raise ValueError("empty or oversized JWT segment")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
