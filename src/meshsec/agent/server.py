"""Assembly of the agent process: secret store, its producer, and the servers that read it.

Producer: :class:`CertificateRotator` (a CA) or :class:`MountedCertsWatcher`
(``FILE_MOUNTED_CERTS``). Consumers: Envoy SDS and the SPIFFE Workload API (each its own gRPC
server on its own Unix socket), the ``OUTPUT_CERTS`` writer, and the status HTTP server.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from envoy.service.secret.v3 import sds_pb2_grpc

from meshsec._proto import spiffe_workload_pb2_grpc
from meshsec.agent.caclient import CaClient as GrpcCaClient
from meshsec.agent.caclient import RenewingCaClient
from meshsec.agent.errors import AgentError, UpstreamError
from meshsec.agent.metrics import CERT_EXPIRY_SECONDS, AgentMetrics, Labels
from meshsec.agent.mounted import MountedCertsWatcher
from meshsec.agent.output import CertFileWriter
from meshsec.agent.rotation import CaClient, CertificateRotator, RetryPolicy, RotationSettings
from meshsec.agent.sds.files import FileSecrets
from meshsec.agent.sds.service import SecretDiscoveryService
from meshsec.agent.secret import DEFAULT, ROOTCA
from meshsec.agent.sockets import prepare_socket_path, remove_socket
from meshsec.agent.status import StatusServer
from meshsec.agent.store import SecretStore
from meshsec.agent.tokens import FileTokenSource
from meshsec.agent.workloadapi.service import WorkloadApiService
from meshsec.config.agent import AgentSettings
from meshsec.config.load import parse_host_port
from meshsec.core.pki import KeySpec
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)

MAX_SDS_STREAMS = 100_000


def build_key_spec(settings: AgentSettings) -> KeySpec:
    """Istio's choice: RSA (``WORKLOAD_RSA_KEY_SIZE``) unless ``ECC_SIGNATURE_ALGORITHM=ECDSA``."""
    if settings.ecc_signature_algorithm == "ECDSA":
        return KeySpec.EC_P384 if settings.ecc_curve == "P384" else KeySpec.EC_P256
    return {2048: KeySpec.RSA_2048, 3072: KeySpec.RSA_3072, 4096: KeySpec.RSA_4096}[
        settings.workload_rsa_key_size
    ]


@dataclass(frozen=True)
class Endpoints:
    sds_socket: Path
    workload_socket: Path | None
    status: tuple[str, int]


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        clock: Clock,
        ca_client: CaClient | None = None,
        metrics: AgentMetrics | None = None,
        retry: RetryPolicy | None = None,
        rand: Callable[[], float] = random.random,
        mounted_poll_interval: float = 1.0,
        file_read_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or AgentMetrics()
        self.store = SecretStore(clock.monotonic)
        self.metrics.add_collector(self._expiry_samples)
        self.rotator: CertificateRotator | None = None
        self._owned_client: RenewingCaClient | None = None
        self.watcher: MountedCertsWatcher | None = None
        if settings.file_mounted_certs:
            self.watcher = MountedCertsWatcher(
                settings.mounted_certs_dir,
                store=self.store,
                clock=clock,
                metrics=self.metrics,
                poll_interval=mounted_poll_interval,
                debounce=settings.file_debounce_duration.total_seconds(),
            )
        else:
            if ca_client is None:
                self._owned_client = build_ca_client(settings, self.store, self.metrics, clock)
                ca_client = self._owned_client
            self.rotator = CertificateRotator(
                store=self.store,
                ca_client=ca_client,
                clock=clock,
                settings=RotationSettings(
                    identity=settings.identity,
                    ttl=settings.secret_ttl,
                    key_spec=build_key_spec(settings),
                    grace_ratio=settings.secret_grace_period_ratio,
                    grace_jitter=settings.secret_grace_period_ratio_jitter,
                ),
                metrics=self.metrics,
                retry=retry,
                rand=rand,
            )
        if settings.output_certs is not None:
            self.store.add_listener(CertFileWriter(settings.output_certs))
        self.files = FileSecrets(
            clock,
            self.metrics,
            poll_interval=mounted_poll_interval,
            debounce=settings.file_debounce_duration.total_seconds(),
            read_timeout=file_read_timeout,
        )
        self.sds = SecretDiscoveryService(self.store, clock, self.metrics, self.files)
        self.workload_api = WorkloadApiService(self.store, clock)
        self.status = StatusServer(self.store, clock, self.metrics)
        self._servers: list[grpc.aio.Server] = []
        self._sockets: list[Path] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.endpoints: Endpoints | None = None
        self.crashed = asyncio.Event()

    async def start(self) -> Endpoints:
        """Bind every endpoint (SocketInUseError if one is taken), then start producing."""
        sds_path = self.settings.sds_socket_path
        workload_path = self.settings.workload_socket
        for path in (sds_path, workload_path):
            if path is not None:
                prepare_socket_path(path)
        try:
            await self._serve_grpc(sds_path, self._add_sds)
            if workload_path is not None:
                await self._serve_grpc(workload_path, self._add_workload_api)
            host, port = parse_host_port(self.settings.status, what="--status")
            status = await self.status.start(host, port)
        except BaseException:
            await self.stop()
            raise
        if self.watcher is not None:
            self.watcher.check_once()  # serve mounted files from the first moment
            self._spawn(self.watcher.run(), "mounted-certs")
        if self.rotator is not None:
            self._spawn(self.rotator.run(), "rotation")
        self.endpoints = Endpoints(sds_path, workload_path, status)
        log.info(
            "agent serving SDS on %s, Workload API on %s, status on http://%s:%d",
            sds_path,
            workload_path or "(disabled)",
            *status,
        )
        return self.endpoints

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.critical("agent task %s crashed: %r", task.get_name(), exc, exc_info=exc)
            self.crashed.set()

    async def stop(self, grace: float = 0.5) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(s.stop(grace) for s in self._servers), return_exceptions=True)
        self._servers.clear()
        await self.status.close()
        await self.files.close()
        if self._owned_client is not None:
            await self._owned_client.close()
        for path in self._sockets:
            remove_socket(path)
        self._sockets.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; AgentError if a background task crashed."""
        await self.start()
        try:
            waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self.crashed.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        finally:
            await self.stop()
        if self.crashed.is_set():
            raise AgentError("a background task crashed (see the log above)")

    async def _serve_grpc(self, path: Path, add: Callable[[grpc.aio.Server], None]) -> None:
        server = grpc.aio.server(
            options=[("grpc.max_concurrent_streams", MAX_SDS_STREAMS), ("grpc.so_reuseport", 0)]
        )
        add(server)
        try:
            server.add_insecure_port(f"unix:{path}")
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {path}: {exc}") from None
        await server.start()
        self._servers.append(server)
        self._sockets.append(path)

    def _add_sds(self, server: grpc.aio.Server) -> None:
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self.sds, server)

    def _add_workload_api(self, server: grpc.aio.Server) -> None:
        spiffe_workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(self.workload_api, server)

    def _expiry_samples(self) -> Iterable[tuple[str, Labels, float]]:
        snapshot = self.store.snapshot()
        now: datetime = self.clock.now()
        if snapshot.workload is not None:
            seconds = (snapshot.workload.not_after - now).total_seconds()
            yield CERT_EXPIRY_SECONDS, (("resource_name", DEFAULT),), seconds
        if snapshot.roots is not None and len(snapshot.roots.certificates):
            first = min(c.not_valid_after_utc for c in snapshot.roots.certificates)
            yield CERT_EXPIRY_SECONDS, (("resource_name", ROOTCA),), (first - now).total_seconds()


def build_ca_client(
    settings: AgentSettings, store: SecretStore, metrics: AgentMetrics, clock: Clock
) -> RenewingCaClient:
    """The gRPC CA client wired the Istio way: token re-read per call, root re-read per connect,
    the agent's current certificate (or ``PROV_CERT``) presented as the TLS client certificate."""
    root_path = settings.ca_root_path
    tokens = FileTokenSource(settings.token_file, metrics, clock.now)

    def load_root() -> bytes:
        try:
            return root_path.read_bytes()
        except OSError as exc:
            raise UpstreamError(
                "FAILED_PRECONDITION",
                f"cannot read the CA root {root_path} "
                f"(PILOT_CERT_PROVIDER={settings.pilot_cert_provider}): {exc.strerror}",
            ) from None

    def client_identity() -> tuple[bytes, bytes] | None:
        current = store.snapshot().valid_workload(clock.now())
        if current is not None:
            return current.key_pem, current.cert_chain_pem
        if settings.prov_cert is not None:
            try:
                return (
                    (settings.prov_cert / "key.pem").read_bytes(),
                    (settings.prov_cert / "cert-chain.pem").read_bytes(),
                )
            except OSError as exc:
                log.warning("cannot read PROV_CERT in %s: %s", settings.prov_cert, exc.strerror)
        return None

    def build(address: str) -> GrpcCaClient:
        return GrpcCaClient(
            address,
            root_provider=load_root,
            server_name=settings.istiod_san,
            cluster_id=settings.cluster_id,
            client_identity=client_identity,
            extra_headers=dict(settings.ca_headers),
        )

    return RenewingCaClient(
        build(settings.ca_addr),
        token_provider=tokens.token,
        mtls=build(settings.ca_mtls_addr) if settings.ca_mtls_addr else None,
        has_client_identity=lambda: client_identity() is not None,
        cert_signer=settings.cert_signer,
    )
