"""The API server's serving CA: what a kubeconfig's ``certificate-authority-data`` holds.

A real cluster has a CA of its own (``/etc/kubernetes/pki/ca.crt``; the same ``ca.crt`` every
service-account token secret carries) that signs the API server's serving certificate. A local
cluster keeps one in its directory::

    DIR/ca.crt   the cluster CA certificate (PEM, world-readable)
    DIR/ca.key   its private key (PKCS#8 PEM, mode 0600)

and ``meshsec cluster serve`` issues itself a short-lived serving certificate from it at every
start (ECDSA P-256, SANs: the listen address, ``localhost``, ``127.0.0.1``, ``::1``,
``kubernetes``, ``kubernetes.default``, ``kubernetes.default.svc`` and any ``--tls-san``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshsec.cluster.errors import ClusterDirError
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, write_atomic

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CA_TTL = timedelta(days=3650)
SERVING_TTL = timedelta(days=30)
DEFAULT_SANS = (
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
)


@dataclass(frozen=True)
class ServingCa:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def build_serving_ca(cluster: str, *, now: datetime) -> ServingCa:
    """A new self-signed cluster CA (``CN=kubernetes-ca <cluster>``, CA:true, pathlen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"kubernetes-ca {cluster}")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServingCa(cert, key)


def write_serving_ca(directory: Path, ca: ServingCa) -> None:
    key_pem = ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(directory / CA_KEY_FILE, key_pem, KEY_MODE)
    write_atomic(directory / CA_CERT_FILE, ca.cert_pem, PUBLIC_MODE)


def load_serving_ca(directory: Path) -> ServingCa:
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        raise ClusterDirError(cert_path, "not found") from None
    except (OSError, ValueError) as exc:
        raise ClusterDirError(cert_path, f"not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ClusterDirError(key_path, "not found") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ClusterDirError(key_path, f"not a usable PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ClusterDirError(key_path, "the cluster CA key must be an EC key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ClusterDirError(key_path, f"does not match {CA_CERT_FILE}")
    return ServingCa(cert, key)


def load_or_create_serving_ca(directory: Path, cluster: str, *, now: datetime) -> ServingCa:
    """The cluster CA; created when neither file exists (directories from before it existed)."""
    if not (directory / CA_CERT_FILE).exists() and not (directory / CA_KEY_FILE).exists():
        ca = build_serving_ca(cluster, now=now)
        write_serving_ca(directory, ca)
        return ca
    return load_serving_ca(directory)


def load_serving_ca_pem(directory: Path) -> bytes:
    """Only the CA certificate (what goes into kubeconfigs)."""
    return load_serving_ca(directory).cert_pem


def build_serving_certificate(
    ca: ServingCa, sans: tuple[str, ...], *, now: datetime
) -> tuple[bytes, bytes]:
    """(certificate chain PEM, key PEM) of an API server serving certificate for ``sans``."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for san in dict.fromkeys((*sans, *DEFAULT_SANS)):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kube-apiserver"))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + SERVING_TTL, ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
