"""The sans-IO HTTP/1.1 framer: heads, body framing, chunked edge cases, byte-by-byte feeding."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsec.proxy.errors import HttpError
from meshsec.proxy.http1 import (
    BodyFramer,
    Framing,
    MessageReader,
    request_framing,
    response_framing,
)
from meshsec.proxy.http1_head import (
    parse_request_head,
    parse_response_head,
)


def _run(stream: bytes, step: int) -> tuple[list[bytes], bytes, int]:
    heads: list[bytes] = []
    body = bytearray()
    ends = 0

    def on_head(raw: bytes) -> BodyFramer:
        heads.append(raw)
        return request_framing(parse_request_head(raw))

    def on_end() -> None:
        nonlocal ends
        ends += 1

    reader = MessageReader(on_head, lambda chunk: body.extend(chunk), on_end)
    for i in range(0, len(stream), step):
        reader.feed(stream[i : i + step])
    return heads, bytes(body), ends


PIPELINE = (
    b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\ntrailer: t\r\n\r\n"
    b"PUT /b HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nwxyz"
    b"GET /c HTTP/1.1\r\nhost: x\r\n\r\n"
)


@pytest.mark.parametrize("step", [1, 2, 7, 64, len(PIPELINE)], ids=lambda s: f"step{s}")
def test_an_unread_head_comes_again_on_resume_with_what_followed(step: int) -> None:
    # the proxy's pipelining limit: a head it cannot take yet is unread and taken later
    heads: list[bytes] = []
    body = bytearray()
    unread_once = True
    reader: MessageReader

    def on_head(raw: bytes) -> BodyFramer | None:
        nonlocal unread_once
        heads.append(raw.split(b" ", 2)[1])
        if raw.startswith(b"PUT") and unread_once:
            unread_once = False
            reader.unread(raw)
            return None
        return request_framing(parse_request_head(raw))

    reader = MessageReader(on_head, lambda chunk: body.extend(chunk), lambda: None)
    for i in range(0, len(PIPELINE), step):
        reader.feed(PIPELINE[i : i + step])
    assert heads == [b"/a", b"/b"]
    assert not body.endswith(b"wxyz")
    reader.resume()
    assert heads == [b"/a", b"/b", b"/b", b"/c"]
    assert body.endswith(b"0\r\ntrailer: t\r\n\r\nwxyz")
    assert reader.idle


@pytest.mark.parametrize("step", [1, 2, 7, 64, len(PIPELINE)], ids=lambda s: f"step{s}")
def test_pipeline_is_framed_the_same_however_it_arrives(step: int) -> None:
    heads, body, ends = _run(PIPELINE, step)
    assert [h.split(b" ", 2)[1] for h in heads] == [b"/a", b"/b", b"/c"]
    assert body == (
        b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\ntrailer: t\r\n\r\n" + b"wxyz"
    )
    assert ends == 3


def _run_cuts(stream: bytes, cuts: list[int]) -> tuple[list[bytes], bytes, int]:
    heads: list[bytes] = []
    body = bytearray()
    ends = 0

    def on_head(raw: bytes) -> BodyFramer:
        heads.append(bytes(raw))
        return request_framing(parse_request_head(raw))

    def on_end() -> None:
        nonlocal ends
        ends += 1

    reader = MessageReader(on_head, lambda chunk: body.extend(chunk), on_end)
    points = [0, *sorted(set(cuts)), len(stream)]
    for a, b in itertools.pairwise(points):
        if b > a:
            reader.feed(stream[a:b])
    return heads, bytes(body), ends


@given(st.lists(st.integers(min_value=1, max_value=len(PIPELINE) - 1), max_size=8))
def test_pipeline_is_framed_the_same_at_any_chunk_boundaries(cuts: list[int]) -> None:
    """Heads arriving whole, with their body, or with the next message all frame the same
    (the reader takes a head straight from the chunk when nothing is buffered)."""
    assert _run_cuts(PIPELINE, cuts) == _run(PIPELINE, len(PIPELINE))


@pytest.mark.parametrize(
    "body",
    [b"zz\r\n", b"3\r\nabcX\r\n", b"3\r\nabc\n0\r\n\r\n", b"-1\r\n", b"1" * 20 + b"\r\n"],
    ids=["not-hex", "overlong-chunk", "bare-lf", "negative", "huge-size"],
)
def test_bad_chunked_bodies_are_refused(body: bytes) -> None:
    head = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    with pytest.raises(HttpError) as info:
        _run(head + body, len(head + body))
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("raw", "method", "framing"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"GET", Framing.LENGTH),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"HEAD", Framing.NONE),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET", Framing.NONE),
        (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", b"GET", Framing.NONE),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"GET", Framing.CHUNKED),
        (b"HTTP/1.0 200 OK\r\n\r\n", b"GET", Framing.UNTIL_CLOSE),
        (b"HTTP/1.1 100 Continue\r\n\r\n", b"POST", Framing.NONE),
    ],
    ids=["length", "head", "204", "304", "chunked", "until-close", "100-continue"],
)
def test_response_framing(raw: bytes, method: bytes, framing: Framing) -> None:
    framer = response_framing(parse_response_head(raw), method)
    assert framer.framing is framing
    assert framer.done is (framing is Framing.NONE)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    ],
    ids=["status-digits", "not-http", "cl-and-te", "no-colon"],
)
def test_bad_responses_map_to_502(raw: bytes) -> None:
    with pytest.raises(HttpError) as info:
        response_framing(parse_response_head(raw), b"GET")
    assert info.value.status == 502


def test_header_names_are_lowercased_and_values_trimmed() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost:  a.b \r\nX-Thing:\tv1, v2\t\r\n\r\n")
    assert head.headers == [(b"host", b"a.b"), (b"x-thing", b"v1, v2")]
    assert head.encode() == b"GET / HTTP/1.1\r\nhost: a.b\r\nx-thing: v1, v2\r\n\r\n"


def test_control_character_in_value_is_refused() -> None:
    with pytest.raises(HttpError, match="control character"):
        parse_request_head(b"GET / HTTP/1.1\r\nhost: a\x00b\r\n\r\n")


def test_too_many_headers_is_431() -> None:
    fields = b"".join(b"x-%d: v\r\n" % i for i in range(101))
    with pytest.raises(HttpError) as info:
        parse_request_head(b"GET / HTTP/1.1\r\nhost: a\r\n" + fields + b"\r\n")
    assert info.value.status == 431
