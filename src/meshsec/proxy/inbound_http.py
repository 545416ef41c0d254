"""Per-request authorization and XFCC on one inbound HTTP/1.1 connection (the hot path).

Every request head is parsed and authorized; allowed requests lose any client-sent
``x-forwarded-client-cert`` and, over mTLS, get ``By=<our id>;Hash=<sha256 of the peer leaf,
hex>;URI=<peer id>`` (Envoy SANITIZE_SET); denied ones get ``403 RBAC: access denied`` and the
connection closes. What keeps the per-request cost low:

* **Authorization once per connection when it can be.** An authorizer that implements
  :class:`~meshsec.proxy.authz.ConnectionScopedAuthorizer` says, for a peer and port under the
  current policy version, the decision every request would get — or ``None`` when the applicable
  policies look at request attributes (paths, methods, hosts, headers, ...). That decision is
  reused until the version changes; otherwise every request is evaluated.
  :class:`~meshsec.proxy.authz.AllowAll` (no policy) is never asked.
* **XFCC built once per connection**, and spliced into the raw head when the client sent none
  (no re-encoding of the head).
* **One write per direction per input chunk**: a response head and its body (or several
  pipelined messages) that arrive together leave as one TLS record batch and one ``send``.
* **The common exchange in one step**: a chunk that is exactly one bodiless request head on an
  allowed connection, or exactly one whole Content-Length response, is checked by one regex
  (:func:`~meshsec.proxy.http1_head.scan_request_head`, :func:`~.scan_response`) and relayed
  without the message readers; everything else goes the general way, with the same result
  (``tests/unit/proxy/test_inbound_http_relay.py`` holds the two paths together).
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable

from meshsec.proxy.authz import (
    ALLOWED,
    AllowAll,
    Authorizer,
    ConnectionScopedAuthorizer,
    Decision,
    HttpRequestInfo,
    PeerInfo,
    is_connection_scoped,
)
from meshsec.proxy.errors import HttpError
from meshsec.proxy.http1 import (
    MAX_PIPELINED,
    BodyFramer,
    Framing,
    MessageReader,
    ReaderState,
    bodiless_response,
    build_response,
    request_framing,
    response_framing,
)
from meshsec.proxy.http1_head import (
    RequestHead,
    parse_request_head,
    parse_response_head,
    scan_request_head,
    scan_response,
)
from meshsec.proxy.metrics import ConnectionLabels, ProxyMetrics
from meshsec.proxy.pump import Link, WriteBatch
from meshsec.proxy.tls import PeerIdentity

log = logging.getLogger("meshsec.proxy.inbound")

XFCC = b"x-forwarded-client-cert"
RBAC_DENIED = b"RBAC: access denied"
_NO_DECISION = object()
# fields that take a request off the one-step path (searched in the lower-cased field block)
_SPECIAL_FIELD = re.compile(
    rb"\r\n(?:content-length|transfer-encoding|x-forwarded-client-cert|upgrade):"
)


class InboundHttp:
    """Per-request authorization and XFCC on one inbound HTTP/1.1 connection."""

    __slots__ = (
        "_at_limit",
        "_conn_decision",
        "_conn_version",
        "_informational",
        "_scoped",
        "_to_app",
        "_to_client",
        "_xfcc_end",
        "authorizer",
        "awaiting_upgrade",
        "closing",
        "draining",
        "labels",
        "link",
        "local_reply",
        "metrics",
        "outstanding",
        "peer",
        "port",
        "requests",
        "responses",
        "tally",
    )

    def __init__(
        self,
        link: Link,
        peer: PeerInfo,
        identity: PeerIdentity | None,
        own_id: str,
        port: int,
        authorizer: Authorizer,
        metrics: ProxyMetrics,
        labels: ConnectionLabels,
        *,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.link = link
        self.draining = draining
        self.closing = False
        self.peer = peer
        self.port = port
        self.authorizer = authorizer
        self.metrics = metrics
        self.labels = labels
        # our XFCC field and the head's final CRLF, spliced in place of that CRLF (one string
        # per connection: every idle keep-alive connection holds it)
        self._xfcc_end = (
            b"%s: By=%s;Hash=%s;URI=%s\r\n\r\n"
            % (XFCC, own_id.encode(), identity.cert_sha256.encode(), identity.principal.encode())
            if identity is not None
            else None
        )
        self.tally = metrics.request_tally(labels)
        link.done.add_done_callback(self.tally.flush_when_done)
        self._scoped = is_connection_scoped(authorizer)
        self._conn_version: object = _NO_DECISION
        self._conn_decision: Decision | None = ALLOWED if isinstance(authorizer, AllowAll) else None
        self.outstanding: deque[bytes] = deque()  # methods of requests awaiting a response
        self.local_reply: bytes | None = None
        self.awaiting_upgrade = False
        self._at_limit = False  # a head beyond MAX_PIPELINED is unread: reading is held
        self.requests = MessageReader(self._request_head, self._request_body, _nothing)
        self.responses = MessageReader(self._response_head, self._response_body, self._response_end)
        self._informational = False
        assert link.up is not None
        self._to_client = WriteBatch(link.down)
        self._to_app = WriteBatch(link.up)
        link.down.on_data = self._from_client
        link.up.on_data = self._from_app

    # authorization ----------------------------------------------------------------------------
    def _connection_decision(self) -> Decision | None:
        """The decision every request on this connection gets now, or None (per request)."""
        if self._scoped:
            authorizer: ConnectionScopedAuthorizer = self.authorizer  # type: ignore[assignment]
            version = authorizer.version
            if version != self._conn_version:
                self._conn_version = version
                self._conn_decision = authorizer.connection_decision(self.peer, self.port)
        return self._conn_decision

    def _decide(self, head: RequestHead) -> Decision:
        decision = self._connection_decision()
        if decision is not None:
            return decision
        host = head.get(b"host") or b""
        info = HttpRequestInfo(
            head.method.decode("ascii"),
            head.target.decode("latin-1"),
            host.decode("latin-1"),
            tuple(head.headers),
        )
        return self.authorizer.authorize(self.peer, self.port, info)

    # client → app -----------------------------------------------------------------------------
    def _from_client(self, data: bytes) -> None:
        try:
            if self._relay_request(data):
                return
            if self.local_reply is not None:
                return  # the connection ends with our reply: nothing after the refused request
            self.requests.feed(data)
        except HttpError as exc:
            self._request_failed(exc)
            return
        self._to_app.flush()
        if self.requests.buffered > self.requests.max_head:
            self.link.down.pause()

    def _relay_request(self, data: bytes) -> bool:
        """The common case in one step: ``data`` is exactly one request head with no body, no
        client XFCC, no Upgrade, no CONNECT, on a connection whose requests are all allowed
        (decided per connection). It goes to the app with our XFCC line; True. False: the
        general path (:class:`MessageReader` and :meth:`_request_head`) takes ``data``, and
        gives the same result for such a head — a property test holds the two together."""
        if (
            not self.requests.idle
            or self.awaiting_upgrade
            or self.local_reply is not None
            or len(self.outstanding) >= MAX_PIPELINED
        ):
            return False
        scanned = scan_request_head(data)
        if scanned is None:
            return False
        method, lowered = scanned
        decision = self._connection_decision()
        if (
            decision is None
            or not decision.allowed
            or method == b"CONNECT"
            or _SPECIAL_FIELD.search(lowered) is not None
        ):
            return False
        assert self.link.up is not None
        xfcc_end = self._xfcc_end
        self.link.up.write(data if xfcc_end is None else data[:-2] + xfcc_end)
        self.outstanding.append(method)
        return True

    def _request_failed(self, exc: HttpError) -> None:
        log.info("inbound http from %s: %s", self.peer.address, exc)
        self._to_app.flush()
        if self.requests.state is ReaderState.BODY and self.outstanding:
            # the body of the last request the app got broke off: its answer will not come
            # (the ones before it are answered first)
            self.outstanding.pop()
        self._reply_and_close(exc.status, exc.reason.encode())

    def _request_head(self, raw: bytes) -> BodyFramer | None:
        if len(self.outstanding) >= MAX_PIPELINED:
            # hold it, and everything after it, until a response completes (backpressure)
            self.requests.unread(raw)
            self._at_limit = True
            self.link.down.hold()
            return None
        head = parse_request_head(raw)
        framer = request_framing(head)
        decision = self._decide(head)
        if not decision.allowed:
            log.info(
                "inbound http: denied %s %s from %s: %s",
                head.method.decode("ascii"),
                head.target[:200].decode("latin-1"),
                self.peer.principal or self.peer.address,
                decision.reason,
            )
            self.tally.add(403)
            self._reply_and_close(403, RBAC_DENIED)
            return None
        if head.has(XFCC):
            # sanitize: rebuild without the client's
            head.headers = [(n, v) for n, v in head.headers if n != XFCC]
            if self._xfcc_end is not None:  # our value: after "<name>: ", before CRLFCRLF
                head.headers.append((XFCC, self._xfcc_end[len(XFCC) + 2 : -4]))
            self._to_app.add(head.encode())
        elif self._xfcc_end is not None:  # the common case: our line before the final CRLF
            self._to_app.add(raw[:-2] + self._xfcc_end)
        else:
            self._to_app.add(raw)
        self.outstanding.append(head.method)
        if head.has(b"upgrade") or head.method == b"CONNECT":
            # hold further client bytes until the app says 101/2xx (tunnel) or refuses
            self.awaiting_upgrade = True
            if framer.done:
                return None
        return framer

    def _request_body(self, chunk: bytes | memoryview) -> None:
        self._to_app.add(chunk)

    def _below_limit(self) -> None:
        """A response completed: the unread head goes on, then what followed it — unless
        that response said ``connection: close`` (draining): then no later request is
        processed (RFC 9112 §9.6) and the connection closes once the others are answered."""
        if self.closing:
            return
        self._at_limit = False
        self.link.down.release()
        try:
            self.requests.resume()
        except HttpError as exc:
            self._request_failed(exc)
            return
        self._to_app.flush()

    def _reply_and_close(self, status: int, body: bytes) -> None:
        self.local_reply = build_response(status, body)
        self.link.down.pause()
        if not self.outstanding:
            self._send_local_reply()

    def _send_local_reply(self) -> None:
        reply, self.local_reply = self.local_reply, None
        if reply is not None:
            self._to_client.add(reply)
            self._to_client.flush()
            self.link.close()

    # app → client -----------------------------------------------------------------------------
    def _from_app(self, data: bytes) -> None:
        if self._relay_response(data):
            return
        try:
            self.responses.feed(data)
        except HttpError as exc:
            self._to_client.flush()
            log.warning("inbound http: bad response from the application: %s", exc.reason)
            if not self.outstanding:
                self.link.close()
                return
            self.link.down.write(build_response(502, b"upstream protocol error"))
            self.link.close()
            return
        self._to_client.flush()

    def _relay_response(self, data: bytes) -> bool:
        """The common case in one step: ``data`` is exactly one whole final response (head
        and Content-Length body) to the oldest outstanding request, not HEAD or CONNECT, while
        nothing else is pending (no upgrade, no local reply, not draining: only a draining
        listener sets :attr:`closing`). It is counted and goes to the client as it is; True.
        False: the general path takes ``data``."""
        outstanding = self.outstanding
        if (
            not outstanding
            or not self.responses.idle
            or self.awaiting_upgrade
            or self.local_reply is not None
        ):
            return False
        scanned = scan_response(data)
        if scanned is None or scanned[1] != len(data):
            return False
        status = scanned[0]
        # a CONNECT is never outstanding here: it sets awaiting_upgrade until it is answered
        if status < 200 or bodiless_response(status, outstanding[0]):
            return False
        if self.draining():
            return False
        outstanding.popleft()
        self.tally.add(status)
        self.link.down.write(data)
        if self._at_limit:
            self._below_limit()
        return True

    def _response_head(self, raw: bytes) -> BodyFramer | None:
        head = parse_response_head(raw)
        method = self.outstanding[0] if self.outstanding else None
        self._informational = 100 <= head.status < 200 and head.status != 101
        if not self._informational and head.status != 101 and self.draining():
            # draining: tell the client to reconnect (to another instance) after this response
            self.closing = True
            if b"close" not in (head.get(b"connection") or b"").lower():
                raw = raw[:-2] + b"connection: close\r\n\r\n"
        self._to_client.add(raw)
        if self._informational:
            return BodyFramer(Framing.NONE)
        self.tally.add(head.status)
        tunnel = head.status == 101 or (method == b"CONNECT" and 200 <= head.status < 300)
        if tunnel and self.awaiting_upgrade:
            self._to_client.flush()
            self.responses.tunnel()
            self.requests.tunnel()  # held client bytes go out now
            self._to_app.flush()
            self.awaiting_upgrade = False
            self.link.down.resume()
            return BodyFramer(Framing.NONE)
        return response_framing(head, method)

    def _response_body(self, chunk: bytes | memoryview) -> None:
        self._to_client.add(chunk)

    def _response_end(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.outstanding:
            self.outstanding.popleft()
        if self._at_limit:
            self._below_limit()
        if self.awaiting_upgrade and not self.outstanding:
            self.awaiting_upgrade = False  # refused upgrade: go on parsing requests
            self.requests.release(BodyFramer(Framing.NONE))
            self._to_app.flush()
        if self.local_reply is not None and not self.outstanding:
            self._to_client.flush()
            self._send_local_reply()
        elif self.closing and not self.outstanding:
            self._to_client.flush()
            self.link.close()


def _nothing() -> None:
    return None
