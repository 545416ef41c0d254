"""``envoy.service.secret.v3.SecretDiscoveryService`` with state-of-the-world xDS semantics.

Per stream:

* the first request (no nonce) subscribes its ``resource_names``; each available resource is sent
  with a fresh ``nonce`` and a ``version_info`` of ``<RFC3339 time>/<counter>``;
* a request whose ``response_nonce`` is the last nonce sent is an ACK (no ``error_detail``) or a
  NACK (``error_detail`` set). A NACK is logged and counted and **not** answered, so a client that
  rejects a secret does not start a resend loop; the next change is pushed as usual;
* a request with an older nonce is stale and ignored (xDS protocol);
* a change of subscription in an ACK sends only the newly added names;
* a store change pushes, to this stream only, the subscribed names whose content changed
  (rotation → ``default``; new roots → ``ROOTCA``);
* unknown names end the stream with NOT_FOUND naming what is served (never a silent hang);
* ``file-cert:<cert>~<key>`` / ``file-root:<path>`` names are read from files when first
  subscribed and pushed again when the files change (:mod:`meshsec.agent.sds.files`); a file
  resource that cannot be read ends the stream with UNAVAILABLE ``failed to generate secret for
  <name>: <reason>`` (Istio terminates the stream too; Envoy retries);
* a subscribed name with nothing valid to serve yet (warming, or the certificate expired and
  renewal is failing) is held until there is, like Istio's warming. An expired certificate is
  never sent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from meshsec.agent.errors import FileResourceError, FileResourceNameError
from meshsec.agent.metrics import SDS_NACKS, SDS_PUSHES, AgentMetrics
from meshsec.agent.sds.convert import (
    SECRET_TYPE_URL,
    build_discovery_response,
    build_tls_certificate_secret,
    build_validation_context_secret,
)
from meshsec.agent.sds.files import FileSecrets, is_file_resource_name
from meshsec.agent.secret import DEFAULT, RESOURCE_NAMES, ROOTCA
from meshsec.agent.store import SecretStore, Snapshot
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)


@dataclass
class _StreamState:
    stream_id: int
    subscribed: frozenset[str] = frozenset()
    sent_versions: dict[str, int] = field(default_factory=dict)
    file_names: set[str] = field(default_factory=set)  # file resources subscribed (watched)
    last_nonce: str | None = None
    acked_version: str | None = None


@dataclass(frozen=True)
class _Request:
    message: discovery_pb2.DiscoveryRequest


@dataclass(frozen=True)
class _Change:
    snapshot: Snapshot


class _StreamEnded(Exception):
    pass


class SecretDiscoveryService(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        store: SecretStore,
        clock: Clock,
        metrics: AgentMetrics,
        files: FileSecrets | None = None,
    ) -> None:
        self._store = store
        self._files = files
        self._built: dict[str, tuple[object, secret_pb2.Secret]] = {}
        self._clock = clock
        self._metrics = metrics
        self._versions = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self.active_streams = 0

    async def StreamSecrets(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        state = _StreamState(next(self._stream_ids))
        events: asyncio.Queue[_Request | _Change | _StreamEnded] = asyncio.Queue()
        reader = asyncio.create_task(self._read(request_iterator, events))
        watcher = asyncio.create_task(self._watch(events))
        file_watcher = asyncio.create_task(self._watch_files(events))
        self.active_streams += 1
        try:
            while True:
                event = await events.get()
                if isinstance(event, _StreamEnded):
                    return
                if isinstance(event, _Request):
                    names = await self._on_request(state, event.message, context)
                else:
                    names = self._changed_names(state, event.snapshot)
                response = self._respond(state, names, self._store.snapshot())
                if response is not None:
                    yield response
        finally:
            self.active_streams -= 1
            reader.cancel()
            watcher.cancel()
            file_watcher.cancel()
            await asyncio.gather(reader, watcher, file_watcher, return_exceptions=True)
            for name in state.file_names:
                self._files.unsubscribe(name)  # type: ignore[union-attr]
            log.debug("sds stream %d closed", state.stream_id)

    async def FetchSecrets(
        self,
        request: discovery_pb2.DiscoveryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> discovery_pb2.DiscoveryResponse:
        await self._check_request(request, context)
        state = _StreamState(0)
        try:
            await self._subscribe(state, frozenset(request.resource_names), context)
            return await self._fetch(request, context)
        finally:
            for name in state.file_names:
                self._files.unsubscribe(name)  # type: ignore[union-attr]

    async def _fetch(
        self,
        request: discovery_pb2.DiscoveryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> discovery_pb2.DiscoveryResponse:
        snapshot = self._store.snapshot()
        secrets = []
        for name in request.resource_names:
            secret = self._build(name, snapshot)
            if secret is None:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no valid secret for {name!r} yet (certificate not issued or expired)",
                )
            secrets.append(secret)
        return build_discovery_response(
            secrets, version_info=self._next_version(), nonce=uuid.uuid4().hex
        )

    async def DeltaSecrets(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "DeltaSecrets is not supported")
        yield discovery_pb2.DeltaDiscoveryResponse()  # pragma: no cover (abort raises)

    async def _read(
        self,
        requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
        events: asyncio.Queue[_Request | _Change | _StreamEnded],
    ) -> None:
        try:
            async for message in requests:
                events.put_nowait(_Request(message))
        finally:
            events.put_nowait(_StreamEnded())

    async def _watch(self, events: asyncio.Queue[_Request | _Change | _StreamEnded]) -> None:
        generation = self._store.snapshot().generation
        while True:
            snapshot = await self._store.wait_for_change(generation)
            generation = snapshot.generation
            events.put_nowait(_Change(snapshot))

    async def _watch_files(self, events: asyncio.Queue[_Request | _Change | _StreamEnded]) -> None:
        if self._files is None:
            return
        generation = self._files.generation
        while True:
            generation = await self._files.wait_for_change(generation)
            events.put_nowait(_Change(self._store.snapshot()))

    async def _subscribe(
        self,
        state: _StreamState,
        names: frozenset[str],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Make ``names`` the stream's subscription, loading / releasing file resources."""
        if self._files is not None:
            for name in sorted(state.file_names - names):
                self._files.unsubscribe(name)
                state.file_names.discard(name)
            for name in sorted(n for n in names - state.file_names if is_file_resource_name(n)):
                try:
                    await self._files.subscribe(name)
                except FileResourceError as exc:
                    log.warning("sds stream %d: %s", state.stream_id, exc)
                    bad_name = isinstance(exc, FileResourceNameError)
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT
                        if bad_name
                        else grpc.StatusCode.UNAVAILABLE,
                        f"failed to generate secret for {name}: {exc.reason}",
                    )
                state.file_names.add(name)
        state.subscribed = names

    async def _check_request(
        self, request: discovery_pb2.DiscoveryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        if request.type_url and request.type_url != SECRET_TYPE_URL:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"type_url {request.type_url!r} is not {SECRET_TYPE_URL}",
            )
        unknown = sorted(
            n
            for n in set(request.resource_names) - set(RESOURCE_NAMES)
            if self._files is None or not is_file_resource_name(n)
        )
        if unknown:
            log.warning("sds request for unknown resource(s) %s", ", ".join(unknown))
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                "unknown SDS resource name(s) "
                + ", ".join(repr(n) for n in unknown)
                + f"; this agent serves {DEFAULT!r}, {ROOTCA!r}"
                + (", file-cert:<cert>~<key> and file-root:<path>" if self._files else ""),
            )

    async def _on_request(
        self,
        state: _StreamState,
        request: discovery_pb2.DiscoveryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> frozenset[str]:
        """Update the stream's state; return the names to send now."""
        await self._check_request(request, context)
        names = frozenset(request.resource_names)
        nonce = request.response_nonce
        if nonce:
            if nonce != state.last_nonce:
                log.debug("sds stream %d: ignoring stale nonce %s", state.stream_id, nonce)
                return frozenset()
            if request.HasField("error_detail"):
                for name in state.subscribed:
                    self._metrics.inc(SDS_NACKS, resource_name=name)
                log.warning(
                    "sds stream %d: client rejected version %s of %s: %s",
                    state.stream_id,
                    request.version_info or "(none)",
                    ", ".join(sorted(state.subscribed)),
                    request.error_detail.message,
                )
                added = names - state.subscribed
                await self._subscribe(state, names, context)
                return added
            state.acked_version = request.version_info
            added = names - state.subscribed
            await self._subscribe(state, names, context)
            return added
        if request.node.id:
            log.info(
                "sds stream %d from node %s subscribes %s",
                state.stream_id,
                request.node.id,
                ", ".join(sorted(names)) or "(nothing)",
            )
        await self._subscribe(state, names, context)
        state.sent_versions.clear()
        return names

    def _changed_names(self, state: _StreamState, snapshot: Snapshot) -> frozenset[str]:
        return frozenset(
            name
            for name in state.subscribed
            if self._version(name, snapshot) > state.sent_versions.get(name, 0)
        )

    def _respond(
        self, state: _StreamState, names: frozenset[str], snapshot: Snapshot
    ) -> discovery_pb2.DiscoveryResponse | None:
        secrets = []
        sent: list[str] = []
        for name in sorted(names):
            secret = self._build(name, snapshot)
            if secret is None:
                continue  # held until something valid exists (warming)
            secrets.append(secret)
            sent.append(name)
            state.sent_versions[name] = self._version(name, snapshot)
        if not secrets:
            return None
        state.last_nonce = uuid.uuid4().hex
        for name in sent:
            self._metrics.inc(SDS_PUSHES, resource_name=name)
        return build_discovery_response(
            secrets, version_info=self._next_version(), nonce=state.last_nonce
        )

    def _build(self, name: str, snapshot: Snapshot) -> secret_pb2.Secret | None:
        if name == DEFAULT:
            workload = snapshot.valid_workload(self._clock.now())
            if workload is None:
                return None
            return self._cached(
                name, workload, lambda: build_tls_certificate_secret(name, workload)
            )
        if name == ROOTCA:
            roots = snapshot.roots
            if roots is None:
                return None
            return self._cached(name, roots, lambda: build_validation_context_secret(name, roots))
        if self._files is not None:
            return self._files.secret(name)
        return None

    def _cached(
        self, name: str, source: object, build: Callable[[], secret_pb2.Secret]
    ) -> secret_pb2.Secret:
        """One Secret message per published secret, shared by every stream's push (a rotation
        with 100 streams encodes the key and builds the message once, not 100 times)."""
        hit = self._built.get(name)
        if hit is not None and hit[0] is source:
            return hit[1]
        secret = build()
        self._built[name] = (source, secret)
        return secret

    def _version(self, name: str, snapshot: Snapshot) -> int:
        if self._files is not None and is_file_resource_name(name):
            return self._files.version(name)
        return snapshot.versions.get(name, 0)

    def _next_version(self) -> str:
        stamp = self._clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{stamp}/{next(self._versions)}"
