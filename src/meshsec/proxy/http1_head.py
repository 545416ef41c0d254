"""HTTP/1.1 message heads for the proxy: bounded, strict parsing of request and response heads.

A head is validated by one regular expression over the whole head (the fast path); when that
does not match, the step-by-step parser gives the precise status (400/431/505 for requests, 502
for responses). Fields are listed only when something asks for them. Bodies are framed by
:mod:`meshsec.proxy.http1`.
"""

from __future__ import annotations

import re

from meshsec.proxy.errors import HttpError

MAX_HEAD = 64 * 1024
MAX_HEADERS = 100

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"  # RFC 9110 tchar: a token is one or more
_TOKEN = re.compile(_TCHAR + rb"+")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")

Headers = list[tuple[bytes, bytes]]  # (lower-case name, value) in arrival order


class _Fields:
    """A head's header fields. A head from the fast path keeps its validated field block as
    received and lists the fields only when asked (:attr:`headers`); :meth:`get` and :meth:`has`
    answer from the block without listing them. Field names are compared lower-case."""

    __slots__ = ("_block", "_headers", "_lowered")

    def _set_fields(
        self, headers: Headers | None, block: bytes | None, lowered: bytes | None = None
    ) -> None:
        # block: b"\r\nName: value" per field, each already validated; lowered: block.lower()
        if block is None:
            self._headers: Headers | None = headers if headers is not None else []
            self._block = self._lowered = b""
        else:
            self._headers = None
            self._block = block
            self._lowered = block.lower() if lowered is None else lowered

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
        lowered: bytes | None = None,
    ) -> None:
        """``fields_block`` (the parser's fast path, instead of ``headers``): the validated
        field lines as received, listed only when asked for; ``lowered``: the block
        lower-cased, when the caller has it already."""
        self.method = method
        self.target = target
        self.version = version
        self._set_fields(headers, fields_block, lowered)

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


_FIELD = rb"(" + _TCHAR + rb"+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r\n"
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
_NAME = _TCHAR + rb"++"
_FIELDS = rb"((?:\r\n" + _NAME + rb":[ \t]*+" + _VALUE + rb"[ \t]*+)*+)\r\n\r\n"
_FIELD_LIST = re.compile(rb"\r\n(" + _NAME + rb"):[ \t]*+(" + _VALUE + rb")[ \t]*+")
_REQUEST_HEAD = re.compile(rb"(" + _TCHAR + rb"+) ([^\x00-\x20\x7f]+) (HTTP/1\.[01])" + _FIELDS)
CONTENT_LENGTH_FIELD = b"\r\ncontent-length:"
TRANSFER_ENCODING_FIELD = b"\r\ntransfer-encoding:"
_RESPONSE_HEAD = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: ([^\r\n]*+))?" + _FIELDS)


def _match_request_head(raw: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
    """(method, target, version, field block, the block lower-cased) when the fast path's regex
    matches the whole of ``raw``; None when it does not (the step-by-step parser decides)."""
    m = _REQUEST_HEAD.fullmatch(raw)
    if m is None:
        return None
    method, target, version, block = m.groups()
    if block.count(b"\r\n") > MAX_HEADERS:  # one CRLF per field
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    lowered = block.lower()
    if version == b"HTTP/1.1" and lowered.count(b"\r\nhost:") != 1:
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header")
    return method, target, version, block, lowered


def parse_request_head(raw: bytes) -> RequestHead:
    """Parse a complete request head (ending in CRLFCRLF)."""
    matched = _match_request_head(raw)
    if matched is None:
        return _parse_request_head_checked(raw)
    method, target, version, block, lowered = matched
    return RequestHead(method, target, version, fields_block=block, lowered=lowered)


def scan_request_head(raw: bytes) -> tuple[bytes, bytes] | None:
    """(method, field block lower-cased) when ``raw`` is exactly one complete, well-formed
    request head within the limits: the relay's one-step path, which never lists the fields.

    None when it is anything else (part of a head, a head and more bytes, a head the fast
    regex does not take): :func:`parse_request_head` then decides, with the same verdict.
    Raises :class:`HttpError` as the parser does for too many fields or a wrong Host count.
    A CRLFCRLF can only end a head the regex matched (values hold no CR or LF), so a match
    of the whole input is one head and nothing else.
    """
    if len(raw) > MAX_HEAD:
        return None
    matched = _match_request_head(raw)
    return None if matched is None else (matched[0], matched[4])


NO_LENGTH = -1  # no Content-Length field
UNCLEAR_LENGTH = -2  # several, or not a plain number: the full framing check decides


def plain_content_length(block: bytes, lowered: bytes) -> int:
    """The value of a field block's only Content-Length when it is a plain number (at most 18
    digits, optional surrounding blanks); :data:`NO_LENGTH` or :data:`UNCLEAR_LENGTH`."""
    at = lowered.find(CONTENT_LENGTH_FIELD)
    if at < 0:
        return NO_LENGTH
    if lowered.find(CONTENT_LENGTH_FIELD, at + 1) >= 0:
        return UNCLEAR_LENGTH
    end = lowered.find(b"\r\n", at + 2)
    value = block[at + len(CONTENT_LENGTH_FIELD) : end if end >= 0 else None].strip(b" \t")
    return int(value) if value.isdigit() and len(value) <= 18 else UNCLEAR_LENGTH


def scan_response(data: bytes) -> tuple[int, int] | None:
    """(status, size of head + body) when ``data`` starts with a well-formed response head
    that frames its body by one plain Content-Length (no Transfer-Encoding), within the limits:
    the relay's one-step path. None otherwise (part of a head, chunked or read-until-close
    bodies, anything the fast regex does not take): :func:`parse_response_head` then decides.
    Whether the status or the request method lets the response have a body is the caller's
    question (1xx, 204, 304, answers to HEAD and CONNECT)."""
    m = _RESPONSE_HEAD.match(data)
    if m is None:
        return None
    stop = m.end()
    block = m.group(4)
    if stop > MAX_HEAD or block.count(b"\r\n") > MAX_HEADERS:
        return None
    lowered = block.lower()
    if TRANSFER_ENCODING_FIELD in lowered:
        return None
    length = plain_content_length(block, lowered)
    if length < 0:
        return None
    return int(m.group(2)), stop + length


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
