"""The CA's own TLS certificate: istiod's names, renewed at half-life for new connections."""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509

from meshsec.ca.assembly import load_material
from meshsec.ca.authority import SERVING_DNS_NAMES, CertificateAuthority
from meshsec.ca.grpc_server import start_grpc_server
from meshsec.ca.serving import ServingCertificates
from tests.component.ca.conftest import Clusters
from tests.component.ca.support import make_settings, new_csr, token_for


class StepClock:
    """Starts 90 minutes in the past so that both certificates verify against the real clock."""

    def __init__(self) -> None:
        self.value = datetime.now(UTC) - timedelta(minutes=90)

    def now(self) -> datetime:
        return self.value


def _peer_certificate(port: int, root: bytes) -> x509.Certificate:
    ctx = ssl.create_default_context(cadata=root.decode())
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="istiod.istio-system.svc") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_serving_certificate_has_istiod_names_and_is_renewed(
    tmp_path: Path, clusters: Clusters
) -> None:
    settings = make_settings(tmp_path, clusters.trusted_dirs)
    material = load_material(settings, now=datetime.now(UTC))
    authority = CertificateAuthority(
        material, default_ttl=timedelta(hours=24), max_ttl=timedelta(days=90)
    )
    clock = StepClock()
    serving = ServingCertificates(authority, ttl=timedelta(hours=2), now=clock.now)
    running = await start_grpc_server(settings, material=material, serving=serving)
    root = material.root_bundle_pem.encode()
    try:
        first = _peer_certificate(running.port, root)
        san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName)]
        assert set(SERVING_DNS_NAMES) - {"127.0.0.1"} <= set(names)
        assert _peer_certificate(running.port, root).serial_number == first.serial_number
        clock.value = datetime.now(UTC)  # 90 min later: past half of the 2h lifetime
        renewed = _peer_certificate(running.port, root)
        assert renewed.serial_number != first.serial_number
        assert serving.generation == 2
        # gRPC clients still verify the renewed certificate as istiod.
        creds = grpc.ssl_channel_credentials(root)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{running.port}",
            creds,
            options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")],
        ) as channel:
            from meshsec._proto import istio_ca_pb2, istio_ca_pb2_grpc

            stub = istio_ca_pb2_grpc.IstioCertificateServiceStub(channel)
            response = await stub.CreateCertificate(
                istio_ca_pb2.IstioCertificateRequest(csr=new_csr()[1]),
                metadata=(("authorization", f"Bearer {token_for(clusters.cluster1)}"),),
                timeout=10,
            )
        assert len(response.cert_chain) == 2
    finally:
        await running.stop(grace=0)
