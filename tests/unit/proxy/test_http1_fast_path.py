"""The head parser's regex fast path answers exactly as the step-by-step parser it falls back to.

Heads are generated from the pieces that matter to the grammar (tokens, SP/HTAB, bare CR/LF,
control and high bytes, colons, the framing and Host fields), so most are well formed and the
rest break one rule; for each, both paths must give the same fields and the same framing, or
the same error status.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meshsec.proxy.errors import HttpError
from meshsec.proxy.http1 import (
    BodyFramer,
    request_framing,
    response_framing,
)
from meshsec.proxy.http1_head import (
    RequestHead,
    ResponseHead,
    _parse_request_head_checked,
    _parse_response_head_checked,
    parse_request_head,
    parse_response_head,
)


def _mostly(valid: list[bytes], broken: list[bytes]) -> st.SearchStrategy[bytes]:
    """A valid piece nine times in ten: most heads break at most one rule."""
    return st.one_of(
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(broken),
    )


VALID_NAMES = [b"Host", b"host", b"Content-Length", b"transfer-encoding", b"Transfer-Encoding"]
VALID_NAMES += [b"x-forwarded-client-cert", b"Upgrade", b"connection", b"X-A", b"a!#$%&'*+-.^_`|~9"]
NAMES = _mostly(VALID_NAMES, [b"a b", b"", b"x\x00", b" host", b"h\xe9", b"x\r", b"x\n"])
VALUE_PIECES = _mostly(
    [b"a", b"5", b"0", b"12", b" ", b"\t", b",", b"chunked", b"gzip", b"close", b"\x80", b"\xff"],
    [b"\x00", b"\x7f", b"\r", b"\n", b"\x1f", b"-1", b"1" * 19, b"\r\n", b"\r\n "],
)
VALUES = st.lists(VALUE_PIECES, max_size=5).map(b"".join)
COLONS = _mostly([b":", b": ", b":\t", b":  "], [b" :", b"\t:", b""])
FIELDS = st.lists(st.tuples(NAMES, COLONS, VALUES), max_size=6)
LINE_ENDS = _mostly([b"\r\n"], [b"\n", b"\r", b"\r\r\n", b"\r\n "])


def _fields(fields: list[tuple[bytes, bytes, bytes]], ends: list[bytes]) -> bytes:
    return b"".join(
        name + colon + value + ends[i % len(ends)] for i, (name, colon, value) in enumerate(fields)
    )


def _outcome(parse: object, raw: bytes) -> object:
    try:
        head = parse(raw)  # type: ignore[operator]
    except HttpError as exc:
        return ("error", exc.status)
    if isinstance(head, RequestHead):
        return (head.method, head.target, head.version, head.headers)
    assert isinstance(head, ResponseHead)
    return (head.version, head.status, head.reason, head.headers)


def _framing(framer: BodyFramer | HttpError) -> object:
    if isinstance(framer, HttpError):
        return ("error", framer.status)
    return (framer.framing, framer.remaining, framer.done)


@settings(max_examples=1000, deadline=None)
@given(
    method=_mostly([b"GET", b"POST", b"PURGE", b"CONNECT"], [b"G T", b"", b"GET\x00", b"G\r"]),
    target=_mostly([b"/", b"/a?b=c", b"*", b"/\xe9", b"a:1"], [b"", b"/a b", b"/\x7f", b"/\n"]),
    version=_mostly([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"HTTX/1.1", b"http/1.1"]),
    fields=FIELDS,
    ends=st.lists(LINE_ENDS, min_size=1, max_size=4),
)
@example(
    method=b"GET",
    target=b"/",
    version=b"HTTP/1.0",
    fields=[(b"Host", b": ", b"a"), (b"Content-Length", b": ", b"5")],
    ends=[b"\r\n"],
)
def test_request_heads_parse_and_frame_the_same_on_both_paths(
    method: bytes,
    target: bytes,
    version: bytes,
    fields: list[tuple[bytes, bytes, bytes]],
    ends: list[bytes],
) -> None:
    raw = method + b" " + target + b" " + version + b"\r\n" + _fields(fields, ends) + b"\r\n"
    if not raw.endswith(b"\r\n\r\n"):
        return
    fast, checked = _outcome(parse_request_head, raw), _outcome(_parse_request_head_checked, raw)
    assert fast == checked
    if isinstance(fast, tuple) and fast[0] != "error":
        assert _framing(_try(request_framing, parse_request_head(raw))) == _framing(
            _try(request_framing, _parse_request_head_checked(raw))
        )


@settings(max_examples=1000, deadline=None)
@given(
    status=_mostly(
        [b"200 OK", b"204 No Content", b"200", b"200 ", b"101 Switching", b"304 x\x00y"],
        [b"20x OK", b"2000 OK", b" 200 OK", b"200 O\rK"],
    ),
    version=_mostly([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2", b"HTTP/1.1 "]),
    fields=FIELDS,
    ends=st.lists(LINE_ENDS, min_size=1, max_size=4),
    method=st.sampled_from([b"GET", b"HEAD", b"CONNECT"]),
)
@example(
    status=b"200 OK",
    version=b"HTTP/1.1",
    fields=[(b"content-length", b": ", b"5"), (b"Content-Length", b":", b"6")],
    ends=[b"\r\n"],
    method=b"GET",
)
@example(
    status=b"200 OK",
    version=b"HTTP/1.1",
    fields=[(b"content-length", b": ", b"5 "), (b"Content-Length", b":", b"5")],
    ends=[b"\r\n"],
    method=b"GET",
)
@example(
    status=b"200 OK",
    version=b"HTTP/1.0",
    fields=[(b"content-length", b": ", b"5"), (b"transfer-encoding", b":", b"chunked")],
    ends=[b"\r\n"],
    method=b"GET",
)
def test_response_heads_parse_and_frame_the_same_on_both_paths(
    status: bytes,
    version: bytes,
    fields: list[tuple[bytes, bytes, bytes]],
    ends: list[bytes],
    method: bytes,
) -> None:
    raw = version + b" " + status + b"\r\n" + _fields(fields, ends) + b"\r\n"
    if not raw.endswith(b"\r\n\r\n"):
        return
    fast, checked = _outcome(parse_response_head, raw), _outcome(_parse_response_head_checked, raw)
    assert fast == checked
    if isinstance(fast, tuple) and fast[0] != "error":
        assert _framing(_try(response_framing, parse_response_head(raw), method)) == _framing(
            _try(response_framing, _parse_response_head_checked(raw), method)
        )


def _try(framing: object, *args: object) -> BodyFramer | HttpError:
    try:
        return framing(*args)  # type: ignore[operator,no-any-return]
    except HttpError as exc:
        return exc


@pytest.mark.parametrize(
    ("raw", "name", "value"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade:  websocket \t\r\n\r\n", b"upgrade", b"websocket"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n", b"x-a", b"1"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A:\r\n\r\n", b"x-a", b""),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-B: x-a: 1\r\n\r\n", b"x-a", None),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Upgrade: 1\r\n\r\n", b"upgrade", None),
    ],
    ids=["trimmed", "first-of-two", "empty", "name-inside-a-value", "suffix-of-a-name"],
)
def test_fields_are_found_without_listing_them(
    raw: bytes, name: bytes, value: bytes | None
) -> None:
    head = parse_request_head(raw)
    assert head.get(name) == value
    assert head.has(name) is (value is not None)
    listed = [v for n, v in head.headers if n == name]  # lists them now
    assert head.get(name) == (listed[0] if listed else None)
    assert head.has(name) is bool(listed)


def test_replaced_fields_are_the_ones_answered() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n")
    head.headers = [(n, v) for n, v in head.headers if n != b"x-a"]
    assert not head.has(b"x-a")
    assert head.get(b"x-a") is None
    assert head.encode() == b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"
