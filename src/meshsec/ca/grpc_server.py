"""One CA gRPC server (a worker's, or a test's): the service, its ledger, its ports.

Token callers connect with TLS (or plaintext when asked); client-certificate callers (renewal)
get their own port where gRPC requires and verifies a certificate. Serving runs on grpc.aio:
measured against the sync server (thread pool) on this machine with h2load and a 125 µs
handler, aio gave 4,370 req/s vs sync 3,040 req/s in one process; uvloop did not help.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from meshsec.ca.assembly import build_authenticators
from meshsec.ca.authn import Authenticator
from meshsec.ca.authority import CertificateAuthority
from meshsec.ca.errors import CaError
from meshsec.ca.ledger import LEDGER_FILE
from meshsec.ca.loop_ledger import LoopLedger
from meshsec.ca.material import CaMaterial
from meshsec.ca.metrics import CaCounters
from meshsec.ca.service import CertificateService, add_to_server
from meshsec.ca.serving import ServingCertificates
from meshsec.config.ca import CaSettings
from meshsec.config.load import format_host_port, parse_host_port
from meshsec.runtime.clock import Clock, SystemClock

if TYPE_CHECKING:
    from meshsec.ca.remote_clusters import RemoteClusters


def grpc_server_options(settings: CaSettings) -> list[tuple[str, Any]]:
    return [
        ("grpc.so_reuseport", 1),
        # Requests up to this size are decoded and refused by the service with a clear log line
        # (INVALID_ARGUMENT); beyond it gRPC itself answers RESOURCE_EXHAUSTED.
        ("grpc.max_receive_message_length", max(4 * settings.max_request_bytes, 1 << 20)),
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.max_metadata_size", 16 * 1024),
        ("grpc.max_concurrent_streams", 1000),
    ]


@dataclass
class RunningServer:
    """An in-process CA gRPC server (one worker, or a test's server)."""

    server: grpc.aio.Server
    port: int
    mtls_port: int | None
    service: CertificateService
    ledger: LoopLedger
    counters: CaCounters

    async def stop(self, grace: float = 2.0) -> None:
        await self.server.stop(grace)
        await self.ledger.close()


async def start_grpc_server(
    settings: CaSettings,
    *,
    material: CaMaterial,
    serving: ServingCertificates | None,
    port: int | None = None,
    mtls_port: int | None = None,
    authenticators: Sequence[Authenticator] | None = None,
    counters: CaCounters | None = None,
    clock: Clock | None = None,
    ledger: LoopLedger | None = None,
    remote: RemoteClusters | None = None,
) -> RunningServer:
    """Build the service and serve it on ``settings.listen`` (or ``port``); TLS unless plaintext."""
    clock = clock or SystemClock()
    counters = counters or CaCounters()
    authority = CertificateAuthority(
        material,
        default_ttl=settings.default_workload_cert_ttl,
        max_ttl=settings.max_workload_cert_ttl,
    )
    ledger = ledger or LoopLedger(settings.data_dir / LEDGER_FILE)
    service = CertificateService(
        authority,
        authenticators
        if authenticators is not None
        else build_authenticators(settings, material, remote=remote),
        ledger=ledger,
        counters=counters,
        clock=clock,
        max_in_flight=settings.max_in_flight,
        max_request_bytes=settings.max_request_bytes,
    )
    server = grpc.aio.server(options=grpc_server_options(settings))
    add_to_server(service, server)
    host, listen_port = parse_host_port(settings.listen)
    address = format_host_port(host, listen_port if port is None else port)
    bound_mtls: int | None = None
    if serving is None:
        bound = server.add_insecure_port(address)
    else:
        # Token callers: TLS without asking for a client certificate. Client-certificate callers
        # (renewal): their own port, certificate required, verified by gRPC against the root
        # bundle and again by authn.ClientCertAuthenticator.
        bound = server.add_secure_port(address, serving.credentials(require_client_auth=False))
        if settings.mtls_listen:
            mtls_host, mtls_listen_port = parse_host_port(settings.mtls_listen, what="mtls")
            mtls_address = format_host_port(
                mtls_host, mtls_listen_port if mtls_port is None else mtls_port
            )
            bound_mtls = server.add_secure_port(
                mtls_address, serving.credentials(require_client_auth=True)
            )
            if bound_mtls == 0:
                raise CaError(f"cannot listen on {mtls_address}")
    if bound == 0:
        raise CaError(f"cannot listen on {address}")
    await server.start()
    return RunningServer(server, bound, bound_mtls, service, ledger, counters)
