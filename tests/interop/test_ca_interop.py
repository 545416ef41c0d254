"""Independent clients against the real CA process.

* A gRPC client generated in this test from ``proto/istio/v1/auth/ca.proto`` alone (grpc_tools
  into a temp dir, run in its own interpreter) obtains a chain with a minted token.
* ``openssl verify`` accepts the chain against ``meshsec ca root``.
* The leaf matches every point of the leaf contract (istio-contracts §3.1), checked with
  ``cryptography`` directly and with py-spiffe's X.509-SVID parser.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from grpc_tools import protoc  # type: ignore[import-untyped]

from tests.fakes.ca_process import CaProcess, run_meshsec

pytestmark = pytest.mark.interop
ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "istio" / "v1" / "auth" / "ca.proto"
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"

CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    from istio.v1.auth import ca_pb2, ca_pb2_grpc

    address, root_file, csr_file, token, ttl = sys.argv[1:6]
    creds = grpc.ssl_channel_credentials(open(root_file, "rb").read())
    options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
    with grpc.secure_channel(address, creds, options=options) as channel:
        stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
        request = ca_pb2.IstioCertificateRequest(
            csr=open(csr_file).read(), validity_duration=int(ttl)
        )
        request.metadata.update({"CertSigner": ""})
        metadata = [("authorization", "Bearer " + token)] if token else []
        try:
            response = stub.CreateCertificate(request, metadata=metadata, timeout=20)
        except grpc.RpcError as exc:
            print(json.dumps({"code": exc.code().name, "details": exc.details()}))
        else:
            print(json.dumps({"code": "OK", "cert_chain": list(response.cert_chain)}))
    """
)


@pytest.fixture(scope="module")
def independent_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    staged = out / "src" / "istio" / "v1" / "auth"
    staged.mkdir(parents=True)
    (staged / "ca.proto").write_bytes(PROTO.read_bytes())
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{out / 'src'}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "istio/v1/auth/ca.proto",
        ]
    )
    assert rc == 0
    (out / "client.py").write_text(CLIENT)
    return out


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CaProcess, Path]]:
    base = tmp_path_factory.mktemp("ca")
    cluster = base / "cluster1"
    assert run_meshsec("cluster", "init", str(cluster), "--name", "cluster1").returncode == 0
    ca = CaProcess.start(base / "data", "--cluster", str(cluster))
    try:
        yield ca, cluster
    finally:
        assert ca.stop() == 0


def _csr(tmp: Path, key: ec.EllipticCurvePrivateKey, san: str | None) -> Path:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=True
        )
    from cryptography.hazmat.primitives import hashes

    path = tmp / "csr.pem"
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


def _call(client: Path, address: str, root: Path, csr: Path, token: str, ttl: int) -> dict:  # type: ignore[type-arg]
    proc = subprocess.run(
        [sys.executable, str(client / "client.py"), address, str(root), str(csr), token, str(ttl)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=client,
        env={"PYTHONPATH": str(client), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_independent_client_gets_a_chain_openssl_accepts_and_leaf_matches_contract(
    ca: tuple[CaProcess, Path], independent_client: Path, tmp_path: Path
) -> None:
    process, cluster = ca
    token = run_meshsec(
        "token", "mint", "--cluster", str(cluster), "--namespace", "default",
        "--service-account", "sleep",
    ).stdout.strip()  # fmt: skip
    root_out = run_meshsec("ca", "root", "--data-dir", str(process.data_dir))
    assert root_out.returncode == 0
    root = tmp_path / "root.pem"
    root.write_text(root_out.stdout)
    key = ec.generate_private_key(ec.SECP256R1())
    # The CSR asks for kube-system/admin: the CA must issue default/sleep (the token's).
    csr = _csr(tmp_path, key, "spiffe://cluster.local/ns/kube-system/sa/admin")
    before = datetime.now(UTC).replace(microsecond=0)
    answer = _call(independent_client, process.address, root, csr, token, 3600)
    after = datetime.now(UTC)
    assert answer["code"] == "OK", answer
    chain = answer["cert_chain"]
    assert len(chain) == 2  # self-signed CA: [leaf, root bundle]
    assert chain[-1] == root_out.stdout

    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_text(chain[0])
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root), str(leaf_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.strip().endswith(": OK")

    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    root_cert = x509.load_pem_x509_certificate(root_out.stdout.encode())
    assert leaf.version is x509.Version.v3
    assert len(leaf.subject) == 0  # empty subject
    san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(SLEEP)]  # one URI SAN only
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert ku.value.key_encipherment
    assert not (ku.value.key_cert_sign)
    assert not (ku.value.crl_sign)
    assert not (ku.value.content_commitment)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    assert 0 < leaf.serial_number < 2**128
    grace = timedelta(minutes=2)
    assert before - grace <= leaf.not_valid_before_utc <= after - grace
    assert before + timedelta(hours=1) <= leaf.not_valid_after_utc <= after + timedelta(hours=1)
    assert leaf.issuer == root_cert.subject
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    leaf.verify_directly_issued_by(root_cert)
    assert leaf.public_key() == key.public_key()  # the CSR's key, nothing else

    from spiffe import X509Svid

    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    svid = X509Svid.parse(chain[0].encode(), key_pem)
    assert str(svid.spiffe_id) == SLEEP


def test_independent_client_without_token_is_unauthenticated(
    ca: tuple[CaProcess, Path], independent_client: Path, tmp_path: Path
) -> None:
    process, _ = ca
    root = tmp_path / "root.pem"
    root.write_bytes(process.root_pem)
    csr = _csr(tmp_path, ec.generate_private_key(ec.SECP256R1()), None)
    answer = _call(independent_client, process.address, root, csr, "", 0)
    assert answer == {"code": "UNAUTHENTICATED", "details": "request authenticate failure"}
