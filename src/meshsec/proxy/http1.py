"""A small, strict, bounded HTTP/1.1 message framer (sans-IO): heads are parsed
(:mod:`meshsec.proxy.http1_head`), bodies only framed.

Why not h11: the proxy relays bodies byte-for-byte and only needs to know where each message
starts and ends (to authorize every request, add ``x-forwarded-client-cert`` and count responses
by code). h11 would buffer bodies into events and cost a dependency and a per-event overhead on
the hot path; these two modules have no state outside :class:`MessageReader`, and rejects
everything that enables request smuggling:

* head larger than ``max_head`` (431) or more than ``max_headers`` fields (431);
* bare LF line ends, obs-fold continuation lines, whitespace before ``:``, control characters,
  non-token names or methods (400); versions other than HTTP/1.0 and HTTP/1.1 (505);
* ``Transfer-Encoding`` together with ``Content-Length``, differing or non-numeric lengths (400),
  a transfer coding other than a final ``chunked`` (501), ``Transfer-Encoding`` in HTTP/1.0 (400);
* HTTP/1.1 requests without exactly one ``Host`` (400); malformed chunk sizes or chunk ends (400).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from meshsec.proxy.errors import HttpError
from meshsec.proxy.http1_head import (
    CONTENT_LENGTH_FIELD,
    MAX_HEAD,
    NO_LENGTH,
    TRANSFER_ENCODING_FIELD,
    UNCLEAR_LENGTH,
    Headers,
    RequestHead,
    ResponseHead,
    plain_content_length,
)

MAX_CHUNK_LINE = 4096
MAX_PIPELINED = 100
"""Requests one connection may have awaiting their responses. Each is remembered (its method
frames its response) and a server's socket buffers hold megabytes of small requests, so a client
pipelining against a slow server would grow that without bound. At the limit the proxy holds the
next request head and stops reading from the client until a response completes (backpressure,
no error); Envoy goes further and takes one request at a time."""


class Framing(Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


# Enum members as module constants for the hot path: a member looked up on its class costs
# ~0.1 µs (Python 3.11), a global ~20 ns.
_F_NONE, _F_LENGTH, _F_CHUNKED, _F_UNTIL_CLOSE = (
    Framing.NONE,
    Framing.LENGTH,
    Framing.CHUNKED,
    Framing.UNTIL_CLOSE,
)


def _content_length(headers: Headers, status_on_error: int) -> int | None:
    values = [v for n, v in headers if n == b"content-length"]
    if not values:
        return None
    if len(values) == 1 and values[0].isdigit() and len(values[0]) <= 18:
        return int(values[0])  # the common case: one plain number
    parts = {p.strip() for v in values for p in v.split(b",")}
    if len(parts) != 1:
        raise HttpError(status_on_error, "conflicting Content-Length values")
    value = parts.pop()
    if not value.isdigit() or len(value) > 18:
        raise HttpError(status_on_error, "malformed Content-Length")
    return int(value)


def _chunked(version: bytes, headers: Headers, status_on_error: int) -> bool:
    values = [v for n, v in headers if n == b"transfer-encoding"]
    if not values:
        return False
    codings = [c.strip().lower() for v in values for c in v.split(b",")]
    if not codings:
        return False
    if version == b"HTTP/1.0":
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 message")
    if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
        raise HttpError(501 if status_on_error == 400 else 502, "unsupported transfer coding")
    return True


def request_framing(head: RequestHead) -> BodyFramer:
    lowered = head._lowered if head._headers is None else None
    if lowered is not None:  # fast path: the common case, no body
        if CONTENT_LENGTH_FIELD not in lowered and TRANSFER_ENCODING_FIELD not in lowered:
            return BodyFramer(_F_NONE)
    elif not (head.has(b"content-length") or head.has(b"transfer-encoding")):
        return BodyFramer(_F_NONE)
    return _request_body_framing(head)


def _request_body_framing(head: RequestHead) -> BodyFramer:
    chunked = _chunked(head.version, head.headers, 400)
    length = _content_length(head.headers, 400)
    if chunked and length is not None:
        raise HttpError(400, "both Transfer-Encoding and Content-Length")
    if chunked:
        return BodyFramer(_F_CHUNKED)
    if length:
        return BodyFramer(_F_LENGTH, length)
    return BodyFramer(_F_NONE)


def bodiless_response(status: int, request_method: bytes | None) -> bool:
    """A response with no body whatever its fields say (RFC 9112 §6.3): to HEAD, 1xx, 204,
    304, and a 2xx to CONNECT (a tunnel follows)."""
    return (
        request_method == b"HEAD"
        or status in (204, 304)
        or 100 <= status < 200
        or (request_method == b"CONNECT" and 200 <= status < 300)
    )


def response_framing(head: ResponseHead, request_method: bytes | None) -> BodyFramer:
    if bodiless_response(head.status, request_method):
        return BodyFramer(_F_NONE)
    lowered = head._lowered if head._headers is None else None
    if lowered is not None and TRANSFER_ENCODING_FIELD not in lowered:
        # fast path: the common case, one plain Content-Length (or none)
        size = plain_content_length(head._block, lowered)
        if size == NO_LENGTH:
            return BodyFramer(_F_UNTIL_CLOSE)
        if size != UNCLEAR_LENGTH:
            return BodyFramer(_F_LENGTH, size) if size else BodyFramer(_F_NONE)
    return _response_body_framing(head)


def _response_body_framing(head: ResponseHead) -> BodyFramer:
    chunked = _chunked(head.version, head.headers, 502)
    length = _content_length(head.headers, 502)
    if chunked and length is not None:
        raise HttpError(502, "both Transfer-Encoding and Content-Length in a response")
    if chunked:
        return BodyFramer(_F_CHUNKED)
    if length is not None:
        return BodyFramer(_F_LENGTH, length) if length else BodyFramer(_F_NONE)
    return BodyFramer(_F_UNTIL_CLOSE)


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class BodyFramer:
    """Counts body bytes; :meth:`consume` says how many of ``data`` belong to this body."""

    __slots__ = ("_line", "_state", "done", "framing", "remaining")

    def __init__(self, framing: Framing, length: int = 0) -> None:
        self.framing = framing
        self.remaining = length
        self.done = framing is _F_NONE
        self._state = _SIZE
        if framing is _F_CHUNKED:
            self._line = bytearray()

    def consume(self, data: memoryview) -> int:
        if self.done:
            return 0
        if self.framing is _F_LENGTH:
            n = min(len(data), self.remaining)
            self.remaining -= n
            self.done = self.remaining == 0
            return n
        if self.framing is _F_UNTIL_CLOSE:
            return len(data)
        return self._consume_chunked(data)

    def _consume_chunked(self, data: memoryview) -> int:
        pos = 0
        end = len(data)
        while pos < end and not self.done:
            if self._state == _DATA:
                n = min(end - pos, self.remaining)
                pos += n
                self.remaining -= n
                if self.remaining == 0:
                    self._state = _DATA_END
                continue
            # line-oriented states: size line, CRLF after data, trailer lines
            nl = bytes(data[pos:end]).find(b"\n")
            stop = end if nl < 0 else pos + nl + 1
            self._line += data[pos:stop]
            pos = stop
            if len(self._line) > MAX_CHUNK_LINE:
                raise HttpError(400, "chunk line too long")
            if nl < 0:
                continue
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r\n"):
                raise HttpError(400, "bare LF in chunked body")
            line = line[:-2]
            if self._state == _DATA_END:
                if line:
                    raise HttpError(400, "chunk data longer than its size")
                self._state = _SIZE
            elif self._state == _SIZE:
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if (
                    not size_text
                    or len(size_text) > 15
                    or not all(c in b"0123456789abcdefABCDEF" for c in size_text)
                ):
                    raise HttpError(400, f"malformed chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                if size == 0:
                    self._state = _TRAILER
                else:
                    self.remaining = size
                    self._state = _DATA
            else:  # trailer section ends with an empty line
                if not line:
                    self.done = True
        return pos


class ReaderState(Enum):
    HEAD = "head"
    BODY = "body"
    TUNNEL = "tunnel"
    HELD = "held"


_S_HEAD, _S_BODY, _S_TUNNEL, _S_HELD = (
    ReaderState.HEAD,
    ReaderState.BODY,
    ReaderState.TUNNEL,
    ReaderState.HELD,
)


class MessageReader:
    """Splits a byte stream into heads and body slices.

    ``on_head(raw)`` gets each complete head and returns the body framer for it (or None to
    hold further input until :meth:`release`); ``on_body(chunk)`` gets body bytes as they
    arrive; ``on_end()`` fires when a body is complete. :meth:`tunnel` switches to raw bytes.
    """

    __slots__ = ("_buf", "_framer", "max_head", "on_body", "on_end", "on_head", "state")

    def __init__(
        self,
        on_head: Callable[[bytes], BodyFramer | None],
        on_body: Callable[[bytes | memoryview], None],
        on_end: Callable[[], None],
        *,
        max_head: int = MAX_HEAD,
    ) -> None:
        self.on_head = on_head
        self.on_body = on_body
        self.on_end = on_end
        self.max_head = max_head
        self.state = _S_HEAD
        self._buf = bytearray()
        self._framer: BodyFramer | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """Between messages with nothing buffered: the next bytes start a head."""
        return self.state is _S_HEAD and not self._buf

    def feed(self, data: bytes) -> None:
        state = self.state
        if state is _S_TUNNEL:
            self.on_body(data)
            return
        if self._buf or state is _S_HELD:
            self._buf += data
            self._run()
            return
        if state is _S_BODY:
            self._run_body(data)
            return
        self._feed_head(data)

    def _feed_head(self, data: bytes) -> None:
        """Nothing buffered and a head expected: take it from ``data`` without copying it
        into the buffer (the common case: one request, or one response head + its body)."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self._buf += data
            self._run()
            return
        stop = end + 4
        if stop > self.max_head:
            raise HttpError(431, f"message head larger than {self.max_head} bytes")
        if stop == len(data):
            framer = self.on_head(data)
            rest = None
        else:
            framer = self.on_head(data[:stop])
            rest = memoryview(data)[stop:]
        if self.state is _S_TUNNEL:
            if rest is not None:
                self.on_body(rest)
            return
        if framer is None:
            self.state = _S_HELD
            if rest is not None:
                self._buf += rest
            return
        self._start_body(framer)
        if rest is None:
            return
        if self.state is _S_BODY and not self._buf:
            self._run_body(rest)
        else:
            self._buf += rest
            self._run()

    def tunnel(self) -> None:
        """Everything from now on (including held bytes) is passed through as body bytes."""
        self.state = _S_TUNNEL
        if self._buf:
            data, self._buf = bytes(self._buf), bytearray()
            self.on_body(data)

    def unread(self, raw: bytes) -> None:
        """From ``on_head``, which then returns None: input is held from ``raw`` on, and
        :meth:`resume` hands ``raw`` to ``on_head`` again (a head the caller cannot take yet)."""
        self._buf[:0] = raw

    def resume(self) -> None:
        """Continue after :meth:`unread`: the unread head is parsed again, then what followed."""
        if self.state is _S_HELD:
            self.state = _S_HEAD
            self._run()

    def release(self, framer: BodyFramer) -> None:
        """Continue after a held head, with the framer decided meanwhile."""
        if self.state is not _S_HELD:
            return
        self._start_body(framer)
        self._run()

    def _start_body(self, framer: BodyFramer) -> None:
        if framer.done:
            self.state = _S_HEAD
            self.on_end()
        else:
            self._framer = framer
            self.state = _S_BODY

    def _run(self) -> None:
        while self._buf and self.state in (_S_HEAD, _S_BODY):
            if self.state is _S_BODY:
                data, self._buf = bytes(self._buf), bytearray()
                self._run_body(data)
                continue
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self.max_head:
                    raise HttpError(431, f"message head larger than {self.max_head} bytes")
                return
            if end + 4 > self.max_head:
                raise HttpError(431, f"message head larger than {self.max_head} bytes")
            raw = bytes(self._buf[: end + 4])
            del self._buf[: end + 4]
            framer = self.on_head(raw)
            if self.state is _S_TUNNEL:
                return
            if framer is None:
                self.state = _S_HELD
                return
            self._start_body(framer)

    def _run_body(self, data: bytes | memoryview) -> None:
        framer = self._framer
        assert framer is not None
        view = memoryview(data)
        n = framer.consume(view)
        if n == len(data):
            self.on_body(data)  # the whole chunk: hand the bytes object on, no slice
        elif n:
            self.on_body(view[:n])
        if framer.done:
            self._framer = None
            self.state = _S_HEAD
            self.on_end()
            if n < len(view) and self.state is _S_HEAD:
                self._buf += view[n:]
                self._run()
            elif n < len(view):
                self._buf += view[n:]
            return


def build_response(status: int, body: bytes, *, close: bool = True) -> bytes:
    reasons = {
        400: b"Bad Request",
        403: b"Forbidden",
        431: b"Request Header Fields Too Large",
        501: b"Not Implemented",
        502: b"Bad Gateway",
        503: b"Service Unavailable",
        504: b"Gateway Timeout",
        505: b"HTTP Version Not Supported",
    }
    reason = reasons.get(status, b"Error")
    head = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"content-length: %d" % len(body),
        b"content-type: text/plain",
    ]
    if close:
        head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body
