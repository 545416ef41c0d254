"""An Envoy-like SDS client on xds-protos messages: subscribe, receive, ACK, NACK.

Used by the component and interop tests and by bench/agent.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
NODE_ID = "sidecar~10.1.2.3~httpbin-7d9c.default~default.svc.cluster.local"


def secrets_of(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for item in response.resources:
        secret = secret_pb2.Secret()
        assert item.Unpack(secret), item.type_url
        out[secret.name] = secret
    return out


class SdsStream:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        self._outgoing: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._call: Any = None
        self._incoming: asyncio.Queue[discovery_pb2.DiscoveryResponse | BaseException] = (
            asyncio.Queue()
        )
        self._reader: asyncio.Task[None] | None = None
        self.last: discovery_pb2.DiscoveryResponse | None = None

    async def _read_all(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    self._incoming.put_nowait(EOFError("stream ended with OK"))
                    return
                self._incoming.put_nowait(response)
        except grpc.aio.AioRpcError as exc:
            self._incoming.put_nowait(exc)

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            item = await self._outgoing.get()
            if item is None:
                return
            yield item

    def open(self, names: list[str], *, type_url: str = SECRET_TYPE_URL) -> None:
        self._call = self._stub.StreamSecrets(self._requests())
        self._reader = asyncio.get_running_loop().create_task(self._read_all())
        self.send(
            discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id=NODE_ID), resource_names=names, type_url=type_url
            )
        )

    def send(self, request: discovery_pb2.DiscoveryRequest) -> None:
        self._outgoing.put_nowait(request)

    async def recv(self, within: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        item = await asyncio.wait_for(self._incoming.get(), within)
        if isinstance(item, BaseException):
            raise item
        self.last = item
        return item

    async def expect_silence(self, within: float = 0.3) -> None:
        """Assert nothing arrives for ``within`` seconds (negative check, bounded)."""
        try:
            item = await asyncio.wait_for(self._incoming.get(), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected SDS response or end: {item}")

    def ack(self, response: discovery_pb2.DiscoveryResponse, names: list[str]) -> None:
        self.send(
            discovery_pb2.DiscoveryRequest(
                version_info=response.version_info,
                resource_names=names,
                response_nonce=response.nonce,
                type_url=SECRET_TYPE_URL,
            )
        )

    def nack(self, response: discovery_pb2.DiscoveryResponse, names: list[str], why: str) -> None:
        self.send(
            discovery_pb2.DiscoveryRequest(
                version_info="",
                resource_names=names,
                response_nonce=response.nonce,
                type_url=SECRET_TYPE_URL,
                error_detail=status_pb2.Status(code=3, message=why),
            )
        )

    async def status(self, within: float = 5.0) -> grpc.aio.AioRpcError:
        """Wait for the stream to end with an error and return it."""
        while True:
            item = await asyncio.wait_for(self._incoming.get(), within)
            if isinstance(item, grpc.aio.AioRpcError):
                return item
            if isinstance(item, BaseException):
                raise AssertionError(f"stream ended without an error: {item}")

    def close(self) -> None:
        self._outgoing.put_nowait(None)
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()


class SdsClient:
    def __init__(self, socket_path: str) -> None:
        self.channel = grpc.aio.insecure_channel(f"unix:{socket_path}")
        self.stub = sds_pb2_grpc.SecretDiscoveryServiceStub(self.channel)
        self.streams: list[SdsStream] = []

    def stream(self, names: list[str]) -> SdsStream:
        stream = SdsStream(self.channel)
        stream.open(names)
        self.streams.append(stream)
        return stream

    async def close(self) -> None:
        for stream in self.streams:
            stream.close()
        await self.channel.close()
