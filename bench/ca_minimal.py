"""The minimal reference CAs of ``bench/ca_throughput.py``, one per Python serving stack.

Each parses and checks the CSR, signs and returns the chain (the same ``sign()`` for every
stack) with no authentication, ledger or metrics; run as the bench's child processes
(``--serve-minimal``), 2 per peer on ``SO_REUSEPORT``, counting replies in a shared file.
"""

from __future__ import annotations

import os
import signal
import ssl
import struct
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRPC_PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

MINIMAL_STACKS = {
    "minimal": "grpc.aio",
    "minimal-grpclib": "grpclib",
    "minimal-h2": "h2",
    "h2-echo": "h2-echo",
}


def load_minimal_signer(cacerts: Path) -> Callable[[str], list[str] | None]:
    """The minimal CA's whole job, shared by every serving stack: parse the CSR, check its
    signature, sign a leaf (same extensions as meshsec's), return leaf + chain (None: bad CSR)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert = x509.load_pem_x509_certificate((cacerts / "ca-cert.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((cacerts / "ca-key.pem").read_bytes(), None)
    chain = x509.load_pem_x509_certificates((cacerts / "cert-chain.pem").read_bytes())
    tail = [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain]
    tail.append((cacerts / "root-cert.pem").read_text())
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    san = x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/bench")]
    )
    ku = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    bc = x509.BasicConstraints(ca=False, path_length=None)

    def sign(csr_pem: str) -> list[str] | None:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if not csr.is_signature_valid:
            return None
        now = datetime.now(UTC)
        public_key = csr.public_key()
        cert = (
            x509.CertificateBuilder(
                issuer_name=ca_cert.subject,
                subject_name=x509.Name([]),
                public_key=public_key,
                serial_number=int.from_bytes(os.urandom(16), "big") or 1,
                not_valid_before=now - timedelta(minutes=2),
                not_valid_after=now + timedelta(hours=24),
            )
            .add_extension(ku, critical=True)
            .add_extension(eku, critical=False)
            .add_extension(bc, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(aki, critical=False)
            .add_extension(san, critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        return [cert.public_bytes(serialization.Encoding.PEM).decode(), *tail]

    return sign


def open_reply_counter(path: Path, slot: int) -> Callable[[], None]:
    """Each minimal worker counts the replies it sent in its own 8-byte slot of a shared file,
    so the bench can check h2load's HTTP 200s against certificates actually returned (gRPC
    errors arrive as HTTP 200 with a grpc-status trailer, which h2load does not read)."""
    import mmap

    fd = os.open(path, os.O_RDWR)
    shared = mmap.mmap(fd, 0)
    os.close(fd)
    offset = 8 * slot
    count = [0]

    def bump() -> None:
        count[0] += 1
        struct.pack_into("<Q", shared, offset, count[0])

    return bump


def read_reply_counters(path: Path) -> int:
    data = path.read_bytes()
    return sum(v for (v,) in struct.iter_unpack("<Q", data))


def serve_minimal(
    stack_name: str,
    port: int,
    cacerts: Path,
    csr_path: Path,
    tls: tuple[Path, Path] | None,
    counter: Callable[[], None],
) -> None:
    """One worker of a minimal CA on ``stack_name``: parse + verify the CSR, sign, return the
    chain. No auth. ``h2-echo`` is not a CA: it answers every request with one chain signed at
    start (the floor of pure-Python HTTP/2 + asyncio, no crypto per request)."""
    sys.path.insert(0, str(ROOT / "src"))
    sign = load_minimal_signer(cacerts)
    if stack_name == "grpc.aio":
        serve_minimal_grpc_aio(port, sign, tls, counter)
    elif stack_name == "grpclib":
        serve_minimal_grpclib(port, sign, tls, counter)
    else:
        fixed = sign(csr_path.read_text()) if stack_name == "h2-echo" else None
        serve_bare_h2(port, sign, fixed, tls, counter)


def serve_minimal_grpc_aio(
    port: int,
    sign: Callable[[str], list[str] | None],
    tls: tuple[Path, Path] | None,
    counter: Callable[[], None],
) -> None:
    import asyncio

    import grpc

    from meshsec._proto import istio_ca_pb2, istio_ca_pb2_grpc

    class Minimal(istio_ca_pb2_grpc.IstioCertificateServiceServicer):  # type: ignore[misc]
        async def CreateCertificate(self, request, context):  # type: ignore[no-untyped-def]
            chain = sign(request.csr)
            if chain is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad CSR signature")
            counter()
            return istio_ca_pb2.IstioCertificateResponse(cert_chain=chain)

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        istio_ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(Minimal(), server)
        address = f"127.0.0.1:{port}"
        if tls is not None:
            pair = (tls[1].read_bytes(), tls[0].read_bytes())
            server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
        else:
            server.add_insecure_port(address)
        await server.start()
        await wait_for_stop_signal()
        await server.stop(0)

    asyncio.run(main())


async def wait_for_stop_signal() -> None:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def server_ssl_context(tls: tuple[Path, Path] | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls[0], tls[1])
    ctx.set_alpn_protocols(["h2"])
    return ctx


def serve_minimal_grpclib(
    port: int,
    sign: Callable[[str], list[str] | None],
    tls: tuple[Path, Path] | None,
    counter: Callable[[], None],
) -> None:
    """The same CA on grpclib (pure-Python gRPC over ``h2``) on uvloop. The service mapping is
    written by hand; the protobuf classes are meshsec's."""
    import uvloop
    from grpclib.const import Cardinality, Handler, Status
    from grpclib.exceptions import GRPCError
    from grpclib.server import Server, Stream

    from meshsec._proto import istio_ca_pb2

    Request = istio_ca_pb2.IstioCertificateRequest
    Response = istio_ca_pb2.IstioCertificateResponse

    class Minimal:
        async def create_certificate(self, stream: Stream[object, object]) -> None:
            request = await stream.recv_message()
            assert request is not None
            chain = sign(request.csr)  # type: ignore[attr-defined]
            if chain is None:
                raise GRPCError(Status.INVALID_ARGUMENT, "bad CSR signature")
            await stream.send_message(Response(cert_chain=chain))
            counter()

        def __mapping__(self) -> dict[str, Handler]:
            return {
                GRPC_PATH: Handler(
                    self.create_certificate, Cardinality.UNARY_UNARY, Request, Response
                )
            }

    async def main() -> None:
        server = Server([Minimal()])
        await server.start("127.0.0.1", port, ssl=server_ssl_context(tls), reuse_port=True)
        await wait_for_stop_signal()
        server.close()
        await server.wait_closed()

    uvloop.run(main())


def serve_bare_h2(
    port: int,
    sign: Callable[[str], list[str] | None],
    fixed_chain: list[str] | None,
    tls: tuple[Path, Path] | None,
    counter: Callable[[], None],
) -> None:
    """gRPC written by hand on bare ``h2`` on uvloop (unary calls only, no deadlines, no
    metadata). With ``fixed_chain`` it is an echo: every request, read to its end, gets that
    chain (signed once at start, the same size as the CA's reply) -- the floor of pure-Python
    HTTP/2. Without it, it is the minimal CA: decode the request, ``sign``, reply."""
    import asyncio

    import h2.config
    import h2.connection
    import h2.events
    import uvloop

    from meshsec._proto import istio_ca_pb2

    def reply_frame(chain: list[str]) -> bytes:
        payload = istio_ca_pb2.IstioCertificateResponse(cert_chain=chain).SerializeToString()
        return struct.pack(">BI", 0, len(payload)) + payload

    fixed = reply_frame(fixed_chain) if fixed_chain is not None else None
    head = [(b":status", b"200"), (b"content-type", b"application/grpc")]
    ok_trailers = [(b"grpc-status", b"0")]
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)

    class BareH2(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.bodies: dict[int, bytearray] = {}
            self.conn = h2.connection.H2Connection(config=config)
            self.conn.initiate_connection()
            transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

        def answer(self, stream_id: int, body: bytes) -> None:
            conn = self.conn
            if fixed is not None:
                frame = fixed
            else:
                (length,) = struct.unpack_from(">I", body, 1)
                request = istio_ca_pb2.IstioCertificateRequest.FromString(body[5 : 5 + length])
                chain = sign(request.csr)
                if chain is None:
                    status = [(b"grpc-status", b"3"), (b"grpc-message", b"bad CSR signature")]
                    conn.send_headers(stream_id, head + status, end_stream=True)
                    return
                frame = reply_frame(chain)
            conn.send_headers(stream_id, head)
            conn.send_data(stream_id, frame)
            conn.send_headers(stream_id, ok_trailers, end_stream=True)
            counter()

        def data_received(self, data: bytes) -> None:
            conn = self.conn
            events = conn.receive_data(data)
            if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                self.transport.close()  # h2load's GOAWAY at the end of a round
                return
            for event in events:
                if isinstance(event, h2.events.DataReceived):
                    self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self.answer(event.stream_id, bytes(self.bodies.pop(event.stream_id, b"")))
            out = conn.data_to_send()
            if out:
                self.transport.write(out)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            BareH2, "127.0.0.1", port, ssl=server_ssl_context(tls), reuse_port=True
        )
        await wait_for_stop_signal()
        server.close()

    uvloop.run(main())
