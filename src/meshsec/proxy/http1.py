"""A small, strict, bounded HTTP/1.1 message framer (sans-IO): heads are parsed, bodies only framed.

Why not h11: the proxy relays bodies byte-for-byte and only needs to know where each message
starts and ends (to authorize every request, add ``x-forwarded-client-cert`` and count responses
by code). h11 would buffer bodies into events and cost a dependency and a per-event overhead on
the hot path; this module is ~300 lines, has no state outside :class:`MessageReader`, and rejects
everything that enables request smuggling:

* head larger than ``max_head`` (431) or more than ``max_headers`` fields (431);
* bare LF line ends, obs-fold continuation lines, whitespace before ``:``, control characters,
  non-token names or methods (400); versions other than HTTP/1.0 and HTTP/1.1 (505);
* ``Transfer-Encoding`` together with ``Content-Length``, differing or non-numeric lengths (400),
  a transfer coding other than a final ``chunked`` (501), ``Transfer-Encoding`` in HTTP/1.0 (400);
* HTTP/1.1 requests without exactly one ``Host`` (400); malformed chunk sizes or chunk ends (400).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum

from meshsec.proxy.errors import HttpError

MAX_HEAD = 64 * 1024
MAX_HEADERS = 100
MAX_CHUNK_LINE = 4096

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")

Headers = list[tuple[bytes, bytes]]  # (lower-case name, value) in arrival order


class _Fields:
    """A head's header fields. A head from the fast path keeps its validated field block as
    received and lists the fields only when asked (:attr:`headers`); :meth:`get` and :meth:`has`
    answer from the block without listing them. Field names are compared lower-case."""

    __slots__ = ("_block", "_headers", "_lowered")

    def _set_fields(self, headers: Headers | None, block: bytes | None) -> None:
        # block: b"\r\nName: value" per field, each already validated; lowered: block.lower()
        if block is None:
            self._headers: Headers | None = headers if headers is not None else []
            self._block = self._lowered = b""
        else:
            self._headers = None
            self._block = block
            self._lowered = block.lower()

    @property
    def headers(self) -> Headers:
        """(lower-case name, value) in arrival order; assigning replaces the fields."""
        headers = self._headers
        if headers is None:
            headers = self._headers = [(n.lower(), v) for n, v in _FIELD_LIST.findall(self._block)]
        return headers

    @headers.setter
    def headers(self, value: Headers) -> None:
        self._headers = value

    def has(self, name: bytes) -> bool:
        """Is there a field named ``name`` (lower-case)?"""
        if self._headers is None:  # a field starts after CRLF and its name ends at the colon
            return b"\r\n" + name + b":" in self._lowered
        return any(n == name for n, _ in self._headers)

    def get(self, name: bytes) -> bytes | None:
        """The first value of ``name`` (lower-case), or None."""
        if self._headers is not None:
            return header_value(self._headers, name)
        at = self._lowered.find(b"\r\n" + name + b":")
        if at < 0:
            return None
        start = at + len(name) + 3
        end = self._block.find(b"\r\n", start)  # values hold no CR or LF
        return self._block[start : end if end >= 0 else None].strip(b" \t")


class RequestHead(_Fields):
    __slots__ = ("method", "target", "version")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: Headers | None = None,
        *,
        fields_block: bytes | None = None,
    ) -> None:
        """``fields_block`` (the parser's fast path, instead of ``headers``): the validated
        field lines as received, listed only when asked for."""
        self.method = method
        self.target = target
        self.version = version
        self._set_fields(headers, fields_block)

    @property
    def keep_alive(self) -> bool:
        return keep_alive(self.version, self.headers)

    def encode(self) -> bytes:
        lines = [b"%s %s %s" % (self.method, self.target, self.version)]
        lines += [b"%s: %s" % (n, v) for n, v in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def __repr__(self) -> str:
        return f"RequestHead({self.method!r}, {self.target!r}, {self.version!r}, {self.headers!r})"


class ResponseHead(_Fields):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        version: bytes,
        status: int,
        reason: bytes,
        headers: Headers | None = None,
        *,
        fields_block: bytes | None = None,
    ) -> None:
        self.version = version
        self.status = status
        self.reason = reason
        self._set_fields(headers, fields_block)

    def __repr__(self) -> str:
        return f"ResponseHead({self.version!r}, {self.status}, {self.reason!r}, {self.headers!r})"


def header_value(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def keep_alive(version: bytes, headers: Headers) -> bool:
    tokens = {t.strip().lower() for n, v in headers if n == b"connection" for t in v.split(b",")}
    if version == b"HTTP/1.0":
        return b"keep-alive" in tokens
    return b"close" not in tokens


_FIELD = rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r\n"
_FIELD_RE = re.compile(_FIELD)
_FIELDS_BLOCK = re.compile(rb"(?:" + _FIELD + rb")*\r\n")


def _split_start(raw: bytes) -> tuple[bytes, bytes]:
    """(start line, header block incl. the final empty line); rejects bare CR/LF anywhere."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        raise HttpError(400, "bare CR or LF in the message head")
    end = raw.index(b"\r\n")
    return raw[:end], raw[end + 2 :]


def _parse_fields(block: bytes) -> Headers:
    """All header fields of ``block`` (validated in one regex pass, names lower-cased)."""
    if _FIELDS_BLOCK.fullmatch(block) is None:
        for line in block.split(b"\r\n"):
            if line and _FIELD_RE.fullmatch(line + b"\r\n") is None:
                if line[:1] in (b" ", b"\t"):
                    raise HttpError(400, "obsolete line folding in a header")
                name = line.partition(b":")[0]
                if b":" in line and _TOKEN.fullmatch(name) is not None:
                    raise HttpError(400, f"control character in header {name.decode()!r}")
                raise HttpError(400, f"malformed header line {line[:60]!r}")
        raise HttpError(400, "malformed header section")
    pairs = _FIELD_RE.findall(block)
    if len(pairs) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    return [(n.lower(), v) for n, v in pairs]


# The fast path: one regex validates a whole well-formed head (the same grammar as the checks
# below: token method, target without controls or spaces, HTTP/1.0 or 1.1, fields whose values
# hold no control character but HTAB, no bare CR/LF anywhere); the fields are listed only when
# asked for. Possessive quantifiers: no backtracking inside a field. A head the fast path does
# not match goes through the step-by-step parser, which says what is wrong (or accepts it the
# same way). Each field in a block is b"\r\n" + name + b":" + value (CRLF before, not after).
_VALUE = rb"(?:[^\x00-\x20\x7f]++(?:[ \t]++[^\x00-\x20\x7f]++)*+)?+"
_NAME = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]++"
_FIELDS = rb"((?:\r\n" + _NAME + rb":[ \t]*+" + _VALUE + rb"[ \t]*+)*+)\r\n\r\n"
_FIELD_LIST = re.compile(rb"\r\n(" + _NAME + rb"):[ \t]*+(" + _VALUE + rb")[ \t]*+")
_REQUEST_HEAD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\x00-\x20\x7f]+) (HTTP/1\.[01])" + _FIELDS
)
_CONTENT_LENGTH = b"\r\ncontent-length:"
_TRANSFER_ENCODING = b"\r\ntransfer-encoding:"
_RESPONSE_HEAD = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: ([^\r\n]*+))?" + _FIELDS)


def parse_request_head(raw: bytes) -> RequestHead:
    """Parse a complete request head (ending in CRLFCRLF)."""
    m = _REQUEST_HEAD.fullmatch(raw)
    if m is None:
        return _parse_request_head_checked(raw)
    method, target, version, block = m.groups()
    if block.count(b"\r\n") > MAX_HEADERS:  # one CRLF per field
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    head = RequestHead(method, target, version, fields_block=block)
    if version == b"HTTP/1.1" and head._lowered.count(b"\r\nhost:") != 1:
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header")
    return head


def parse_response_head(raw: bytes) -> ResponseHead:
    m = _RESPONSE_HEAD.fullmatch(raw)
    if m is None:
        return _parse_response_head_checked(raw)
    version, code, reason, block = m.groups()
    if block.count(b"\r\n") > MAX_HEADERS:
        raise HttpError(502, f"bad response from upstream: more than {MAX_HEADERS} header fields")
    return ResponseHead(version, int(code), reason or b"", fields_block=block)


def _parse_request_head_checked(raw: bytes) -> RequestHead:
    """Step by step, with a precise error (the fast path's fallback)."""
    start, block = _split_start(raw)
    parts = start.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, f"malformed request line {start[:80]!r}")
    method, target, version = parts
    if _TOKEN.fullmatch(method) is None:
        raise HttpError(400, "malformed method")
    if not target or _BAD_TARGET.search(target) is not None:
        raise HttpError(400, "malformed request target")
    if version not in _VERSIONS:
        if version.startswith(b"HTTP/"):
            raise HttpError(505, f"unsupported version {version[:20]!r}")
        raise HttpError(400, "malformed request line")
    headers = _parse_fields(block)
    if version == b"HTTP/1.1" and sum(1 for n, _ in headers if n == b"host") != 1:
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header")
    return RequestHead(method, target, version, headers)


def _parse_response_head_checked(raw: bytes) -> ResponseHead:
    try:
        start, block = _split_start(raw)
        version, _, rest = start.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if version not in _VERSIONS or len(code) != 3 or not code.isdigit():
            raise HttpError(502, f"malformed status line {start[:80]!r}")
        return ResponseHead(version, int(code), reason, _parse_fields(block))
    except HttpError as exc:
        raise HttpError(502, f"bad response from upstream: {exc.reason}") from None


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
        if _CONTENT_LENGTH not in lowered and _TRANSFER_ENCODING not in lowered:
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


def response_framing(head: ResponseHead, request_method: bytes | None) -> BodyFramer:
    if request_method == b"HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
        return BodyFramer(_F_NONE)
    if request_method == b"CONNECT" and 200 <= head.status < 300:
        return BodyFramer(_F_NONE)
    lowered = head._lowered if head._headers is None else None
    if lowered is not None and _TRANSFER_ENCODING not in lowered:
        # fast path: the common case, one plain Content-Length (or none)
        at = lowered.find(_CONTENT_LENGTH)
        if at < 0:
            return BodyFramer(_F_UNTIL_CLOSE)
        if lowered.find(_CONTENT_LENGTH, at + 1) < 0:
            end = lowered.find(b"\r\n", at + 2)
            length = head._block[at + len(_CONTENT_LENGTH) : end if end >= 0 else None]
            length = length.strip(b" \t")
            if length.isdigit() and len(length) <= 18:
                size = int(length)
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
