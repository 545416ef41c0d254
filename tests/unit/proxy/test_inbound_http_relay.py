"""The inbound HTTP one-step relay gives exactly what the general path gives.

:class:`~meshsec.proxy.inbound_http.InboundHttp` relays the common exchange (one whole request
head, one whole response with a Content-Length body) without its message reader. Each test
feeds the same client and application chunks to two connections: one gets every chunk whole
(the one-step path where it applies), the other gets each chunk's first byte apart, which keeps
every head off the one-step path (a single byte is never a whole head). Both must send the same
bytes each way, count the same response codes and end in the same state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meshsec.core.identity import SpiffeId
from meshsec.proxy.authz import ALLOWED, Decision, HttpRequestInfo, PeerInfo
from meshsec.proxy.inbound_http import MAX_PIPELINED, InboundHttp
from meshsec.proxy.metrics import ConnectionLabels, ProxyMetrics
from meshsec.proxy.pump import Link, PumpLimits
from meshsec.proxy.tls import PeerIdentity
from tests.fakes.transport import FakeTransport

CLIENT_ID = "spiffe://cluster.local/ns/a/sa/client"
OWN_ID = "spiffe://cluster.local/ns/b/sa/server"


@dataclass
class Authorizer:
    """Decides whole connections (``scoped``), or per request when ``scoped`` is None."""

    scoped: Decision | None = ALLOWED
    version: object = 1
    requests: list[str] = field(default_factory=list)

    def connection_decision(self, peer: PeerInfo, port: int) -> Decision | None:
        return self.scoped

    def authorize(self, peer: PeerInfo, port: int, request: HttpRequestInfo | None) -> Decision:
        assert request is not None
        self.requests.append(request.path)
        return Decision(request.path != "/deny", "by path")


@dataclass
class Connection:
    link: Link
    handler: InboundHttp
    client: FakeTransport
    app: FakeTransport
    metrics: ProxyMetrics

    def outcome(self) -> tuple[object, ...]:
        self.handler.tally.flush()
        codes = {
            code: self.metrics.sample("istio_requests_total", {"response_code": str(code)})
            for code in (100, 200, 204, 304, 403, 404, 502)
        }
        return (
            bytes(self.app.written),
            bytes(self.client.written),
            codes,
            tuple(self.handler.outstanding),
            self.link.closed,
            not self.client.reading,
            self.handler.awaiting_upgrade,
        )


def _connect(authorizer: Authorizer, *, mtls: bool = True, drain: bool = False) -> Connection:
    link = Link(PumpLimits())
    client, app = FakeTransport(), FakeTransport()
    link.down.connection_made(client)  # type: ignore[arg-type]
    link.new_upstream().connection_made(app)  # type: ignore[arg-type]
    identity = PeerIdentity(SpiffeId.parse(CLIENT_ID), "ab" * 32) if mtls else None
    peer = PeerInfo.from_identity(identity, "127.0.0.1")
    metrics = ProxyMetrics()
    labels = ConnectionLabels("destination", peer.principal, OWN_ID, "inbound|80", "mutual_tls")
    handler = InboundHttp(
        link, peer, identity, OWN_ID, 80, authorizer, metrics, labels, draining=lambda: drain
    )
    link.start()
    return Connection(link, handler, client, app, metrics)


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\nUser-Agent: ab\r\n\r\n",
    b"GET /deny HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: By=forged\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts: 400
    b"GET / HTTP/1.1\r\n\r\n",  # no Host: 400
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",  # control character: 400
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
    b"GET / HTTP/1.1\r\nHost",  # part of a head
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel",  # body still to come
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",  # bad length: 502
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
    # bodiless by status, yet with bytes that a Content-Length would count: the next head
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 103 Early Hints\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",  # read until close
    b"lo",
]


def _run(connection: Connection, steps: list[tuple[bool, bytes]], *, split: bool) -> None:
    for from_client, chunk in steps:
        if connection.link.closed:
            return  # a closed transport delivers nothing more
        side = connection.link.down if from_client else connection.link.up
        assert side is not None
        if split and len(chunk) > 1:
            side.data_received(chunk[:1])
            if not connection.link.closed:
                side.data_received(chunk[1:])
        else:
            side.data_received(chunk)


# mostly request/response pairs (each request meets each kind of response), then strays
PAIRS = st.lists(st.tuples(st.sampled_from(REQUESTS), st.sampled_from(RESPONSES)), max_size=4)
STEPS = st.tuples(PAIRS, st.lists(st.sampled_from(REQUESTS + RESPONSES), max_size=2)).map(
    lambda t: (
        [step for req, resp in t[0] for step in ((True, req), (False, resp))]
        + [(chunk in REQUESTS, chunk) for chunk in t[1]]
    )
)


@settings(max_examples=1000, deadline=None)
@given(
    steps=STEPS,
    scoped=st.sampled_from([ALLOWED, ALLOWED, Decision(False, "denied"), None]),
    mtls=st.booleans(),
    drain=st.booleans(),
)
@example(steps=[(True, REQUESTS[1]), (False, RESPONSES[1])], scoped=ALLOWED, mtls=True, drain=False)
# a malformed head refused while a response is still open, then more client bytes: nothing
# after the refused request may reach the app, however the bytes are cut (found by hypothesis)
@example(
    steps=[
        (True, REQUESTS[0]),
        (False, b"HTTP/1.1 200 OK\r\n\r\n"),  # read until close: never ends here
        (True, REQUESTS[-1]),
        (True, REQUESTS[5]),
        (True, REQUESTS[0]),
    ],
    scoped=ALLOWED,
    mtls=False,
    drain=False,
)
def test_the_one_step_relay_and_the_general_path_agree(
    steps: list[tuple[bool, bytes]], scoped: Decision | None, mtls: bool, drain: bool
) -> None:
    async def both() -> tuple[tuple[object, ...], tuple[object, ...]]:
        whole = _connect(Authorizer(scoped), mtls=mtls, drain=drain)
        apart = _connect(Authorizer(scoped), mtls=mtls, drain=drain)
        _run(whole, steps, split=False)
        _run(apart, steps, split=True)
        return whole.outcome(), apart.outcome()

    whole, apart = asyncio.run(both())
    assert whole == apart


class IdleReader:
    """Stands in for the message readers: always between messages, never fed."""

    idle = True

    def feed(self, data: bytes) -> None:
        raise AssertionError(f"general path taken for {data!r}")


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
async def test_a_keep_alive_exchange_takes_the_one_step_path(version: bytes) -> None:
    connection = _connect(Authorizer())
    handler = connection.handler

    handler.requests = handler.responses = IdleReader()  # type: ignore[assignment]
    up = connection.link.up
    assert up is not None
    for _ in range(3):
        connection.link.down.data_received(b"GET /x " + version + b"\r\nHost: a\r\n\r\n")
        up.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    xfcc = f"x-forwarded-client-cert: By={OWN_ID};Hash={'ab' * 32};URI={CLIENT_ID}\r\n".encode()
    assert (
        bytes(connection.app.written)
        == (b"GET /x " + version + b"\r\nHost: a\r\n" + xfcc + b"\r\n") * 3
    )
    assert bytes(connection.client.written) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" * 3
    handler.tally.flush()
    assert connection.metrics.sample("istio_requests_total", {"response_code": "200"}) == 3


def _request(path: str) -> bytes:
    return b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode()


def _paths(data: bytes) -> list[str]:
    return [
        line.split(b" ")[1].decode()[1:] for line in data.split(b"\r\n") if line.startswith(b"GET ")
    ]


_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@pytest.mark.parametrize("arrival", ["one-chunk", "a-chunk-each", "split-chunks"])
@pytest.mark.parametrize("scoped", [ALLOWED, None], ids=["per-connection", "per-request"])
async def test_pipelining_beyond_the_limit_waits_for_a_response(
    arrival: str, scoped: Decision | None
) -> None:
    # a client pipelining against a slow app: at most MAX_PIPELINED requests await responses,
    # the rest stay unread until the app answers (backpressure), nothing is refused or lost
    connection = _connect(Authorizer(scoped))
    paths = [str(i) for i in range(MAX_PIPELINED + 5)]
    requests = [_request(path) for path in paths]
    if arrival == "one-chunk":
        _run(connection, [(True, b"".join(requests))], split=False)
    else:
        _run(connection, [(True, r) for r in requests], split=arrival == "split-chunks")
    assert _paths(bytes(connection.app.written)) == paths[:MAX_PIPELINED]
    assert len(connection.handler.outstanding) == MAX_PIPELINED
    assert not connection.client.reading
    for answered in range(1, len(paths) + 1):
        _run(connection, [(False, _OK)], split=False)
        forwarded = min(MAX_PIPELINED + answered, len(paths))
        assert _paths(bytes(connection.app.written)) == paths[:forwarded]
        assert bytes(connection.client.written) == _OK * answered
        assert connection.client.reading is (forwarded == len(paths))
    assert not connection.handler.outstanding
    assert not connection.link.closed
    connection.handler.tally.flush()
    assert connection.metrics.sample("istio_requests_total", {"response_code": "200"}) == len(paths)


async def test_a_held_request_is_authorized_when_it_goes_on() -> None:
    connection = _connect(Authorizer(None))  # per request: /deny is denied
    paths = [str(i) for i in range(MAX_PIPELINED)] + ["deny", "after"]
    _run(connection, [(True, b"".join(_request(path) for path in paths))], split=False)
    assert _paths(bytes(connection.app.written)) == paths[:MAX_PIPELINED]
    _run(connection, [(False, _OK)] * MAX_PIPELINED, split=False)
    got = bytes(connection.client.written)
    assert got.startswith(_OK * MAX_PIPELINED)  # the earlier answers first, in order
    assert got[len(_OK) * MAX_PIPELINED :].startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert got.endswith(b"\r\n\r\nRBAC: access denied")
    assert _paths(bytes(connection.app.written)) == paths[:MAX_PIPELINED]  # nothing after it
    assert connection.link.closed


async def test_the_app_draining_its_writes_does_not_resume_a_held_client() -> None:
    connection = _connect(Authorizer(ALLOWED))
    paths = [str(i) for i in range(MAX_PIPELINED + 1)]
    _run(connection, [(True, b"".join(_request(path) for path in paths))], split=False)
    app_side = connection.link.up
    assert app_side is not None
    app_side.pause_writing()
    app_side.resume_writing()  # the app's buffer drained: the held requests still wait
    assert not connection.client.reading
    app_side.pause_writing()
    _run(connection, [(False, _OK)], split=False)  # below the limit, but the app is not reading
    assert _paths(bytes(connection.app.written)) == paths  # the held one went on
    assert not connection.client.reading
    app_side.resume_writing()
    assert connection.client.reading


async def test_draining_holds_back_the_requests_after_a_connection_close_response() -> None:
    connection = _connect(Authorizer(ALLOWED), drain=True)
    paths = [str(i) for i in range(MAX_PIPELINED + 2)]
    _run(connection, [(True, b"".join(_request(path) for path in paths))], split=False)
    _run(connection, [(False, _OK)], split=False)
    assert b"\r\nconnection: close\r\n" in bytes(connection.client.written)
    assert _paths(bytes(connection.app.written)) == paths[:MAX_PIPELINED]  # none after it
    _run(connection, [(False, _OK)] * (MAX_PIPELINED - 1), split=False)
    assert connection.link.closed
    assert _paths(bytes(connection.app.written)) == paths[:MAX_PIPELINED]


@pytest.mark.parametrize("before", [0, 1])
async def test_a_broken_body_of_a_forwarded_request_is_answered_after_the_ones_before(
    before: int,
) -> None:
    # the app has the head and part of the body: it will not answer that request, so only
    # the responses to the requests before it are waited for, and ours never lands in one
    connection = _connect(Authorizer(ALLOWED))
    if before:
        _run(connection, [(True, _request("0")), (False, _OK[:-1])], split=False)
    bad = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    _run(connection, [(True, bad)], split=False)
    if before:
        assert bytes(connection.client.written) == _OK[:-1]
        assert not connection.link.closed
        _run(connection, [(False, _OK[-1:])], split=False)
    assert bytes(connection.client.written).startswith(
        _OK * before + b"HTTP/1.1 400 Bad Request\r\n"
    )
    assert connection.link.closed
