"""``SpiffeWorkloadAPI`` servicer: the X.509 profile, per the SPIFFE Workload API spec.

* Every call must carry metadata ``workload.spiffe.io: true``, else INVALID_ARGUMENT.
* No valid identity (not issued yet, or expired while renewal fails) → PERMISSION_DENIED at call
  time, which clients retry with backoff; a response never has an empty SVID list.
* Streams send the current state at once, then a complete message on every change, and are never
  ended with OK by the server while the client listens.
* JWT methods → UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from meshsec._proto import spiffe_workload_pb2 as pb
from meshsec._proto import spiffe_workload_pb2_grpc as pb_grpc
from meshsec.agent.secret import WorkloadSecret
from meshsec.agent.store import SecretStore
from meshsec.agent.workloadapi.convert import (
    build_x509_bundles_response,
    build_x509_svid_response,
)
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)

SECURITY_HEADER = "workload.spiffe.io"

Context = grpc.aio.ServicerContext[Any, Any]


class WorkloadApiService(pb_grpc.SpiffeWorkloadAPIServicer):  # type: ignore[misc]
    def __init__(self, store: SecretStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def FetchX509SVID(
        self, request: pb.X509SVIDRequest, context: Context
    ) -> AsyncIterator[pb.X509SVIDResponse]:
        async for secret in self._updates(context):
            yield build_x509_svid_response(secret)

    async def FetchX509Bundles(
        self, request: pb.X509BundlesRequest, context: Context
    ) -> AsyncIterator[pb.X509BundlesResponse]:
        last: bytes | None = None
        async for secret in self._updates(context):
            message = build_x509_bundles_response(secret)
            encoded = message.SerializeToString(deterministic=True)
            if encoded != last:  # bundles stream: only when the bundle changed
                last = encoded
                yield message

    async def FetchJWTSVID(
        self, request: pb.JWTSVIDRequest, context: Context
    ) -> pb.JWTSVIDResponse:
        await _check_header(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "JWT-SVIDs are not supported")
        raise AssertionError("unreachable")  # pragma: no cover

    async def FetchJWTBundles(
        self, request: pb.JWTBundlesRequest, context: Context
    ) -> AsyncIterator[pb.JWTBundlesResponse]:
        await _check_header(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "JWT bundles are not supported")
        yield pb.JWTBundlesResponse()  # pragma: no cover

    async def ValidateJWTSVID(
        self, request: pb.ValidateJWTSVIDRequest, context: Context
    ) -> pb.ValidateJWTSVIDResponse:
        await _check_header(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "JWT-SVID validation is not supported")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _updates(self, context: Context) -> AsyncIterator[WorkloadSecret]:
        await _check_header(context)
        snapshot = self._store.snapshot()
        current = snapshot.valid_workload(self._clock.now())
        if current is None:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "no identity issued for this workload yet (or it expired); retry later",
            )
            return
        yield current
        generation = snapshot.generation
        while True:
            snapshot = await self._store.wait_for_change(generation)
            generation = snapshot.generation
            secret = snapshot.valid_workload(self._clock.now())
            if secret is not None:
                yield secret


async def _check_header(context: Context) -> None:
    metadata = context.invocation_metadata() or ()
    values = [str(v) for k, v in metadata if k == SECURITY_HEADER]
    if values != ["true"]:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"security header missing from request: {SECURITY_HEADER}: true",
        )
