"""CA material: where the signing certificate and key come from, checked before serving.

Two sources, as in istiod:

* **self-signed** (default): a root generated once and persisted in the data directory, laid out
  like Istio's ``istio-ca-secret`` (``ca-cert.pem``, ``ca-key.pem`` 0600, ``root-cert.pem``), so a
  restart never mints a new root. A half-present set of files is refused, never overwritten.
* **plugged-in** (``--cacerts DIR`` / ``ROOT_CA_DIR``): Istio's ``cacerts`` layout
  (``ca-cert.pem``, ``ca-key.pem``, ``cert-chain.pem``, ``root-cert.pem``) or the
  ``kubernetes.io/tls`` layout (``tls.crt``, ``tls.key``, ``ca.crt``). Completeness and
  consistency are checked at start; every problem names the file.

Whatever the source, the served root bundle is also written to ``DATA/root-cert.pem`` for
``meshsec ca root``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from meshsec.core.identity import TrustDomain
from meshsec.core.pki import (
    CaMaterialError,
    ChainVerificationError,
    InvalidPem,
    IssuanceError,
    KeySpec,
    PkiError,
    encode_certificate_pem,
    encode_private_key_pem,
    fingerprint,
    generate_private_key,
    parse_certificates_pem,
    parse_private_key_pem,
)
from meshsec.core.pki.bundle import TrustBundle, certificate_fingerprint
from meshsec.core.pki.issue import build_self_signed_root
from meshsec.core.pki.templates import Issuer, random_serial
from meshsec.core.pki.verify import describe_certificate, verify_chain
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, write_atomic

SELF_SIGNED_DIR = "self-signed"
ROOT_BUNDLE_FILE = "root-cert.pem"
CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT = (
    "ca-cert.pem",
    "ca-key.pem",
    "cert-chain.pem",
    "root-cert.pem",
)
TLS_CERT, TLS_KEY, TLS_CA = "tls.crt", "tls.key", "ca.crt"


@dataclass(frozen=True)
class CaMaterial:
    """A ready signer plus what every response carries after the leaf."""

    issuer: Issuer
    root_bundle: TrustBundle
    root_bundle_pem: str  # the last response element, as one string
    chain_pems: tuple[str, ...]  # response elements between the leaf and the root bundle
    chain_certificates: tuple[x509.Certificate, ...]  # the same, parsed (for path building)
    mode: str  # "self-signed" | "plugged-in"
    source: Path

    @property
    def root_not_after(self) -> datetime:
        return self.root_bundle.certificates[0].not_valid_after_utc

    @property
    def chain_not_after(self) -> datetime:
        certs = (self.issuer.certificate, *self.chain_certificates)
        return min(c.not_valid_after_utc for c in certs)

    @property
    def root_fingerprint(self) -> str:
        return certificate_fingerprint(self.root_bundle.certificates[0])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CaMaterialError(str(path), exc.strerror or str(exc)) from None


def _certs(path: Path, what: str) -> list[x509.Certificate]:
    try:
        return parse_certificates_pem(_read(path), what=what)
    except InvalidPem as exc:
        raise CaMaterialError(str(path), f"not a valid {what}: {exc.reason}") from None


def split_pem_elements(certs: list[x509.Certificate]) -> tuple[str, ...]:
    """One response element per certificate, each ending with a newline (Istio's layout)."""
    return tuple(encode_certificate_pem(c).decode().rstrip("\n") + "\n" for c in certs)


def _build_issuer(
    cert_path: Path, key_path: Path, cert: x509.Certificate, chain: list[x509.Certificate]
) -> Issuer:
    try:
        key = parse_private_key_pem(_read(key_path), what="CA private key")
    except InvalidPem as exc:
        raise CaMaterialError(str(key_path), f"not a valid CA private key: {exc.reason}") from None
    try:
        return Issuer(cert, key, tuple(chain))
    except IssuanceError as exc:
        text = str(exc)
        path = key_path if "does not match" in text else cert_path
        if "not a CA" in text:
            text = "certificate is not authorized to sign other certificates"
        raise CaMaterialError(str(path), text) from None


def load_plugged_in_material(directory: Path, *, now: datetime) -> CaMaterial:
    """Istio's ``cacerts`` directory, checked for completeness and consistency."""
    if not directory.is_dir():
        raise CaMaterialError(str(directory), "cacerts directory does not exist")
    if (directory / TLS_CERT).exists():
        names = {"cert": TLS_CERT, "key": TLS_KEY, "root": TLS_CA}
        required: tuple[str, ...] = (TLS_CERT, TLS_KEY, TLS_CA)
    else:
        names = {"cert": CA_CERT, "key": CA_KEY, "root": ROOT_CERT, "chain": CERT_CHAIN}
        required = (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT)
    missing = [n for n in required if not (directory / n).is_file()]
    if missing:
        raise CaMaterialError(
            str(directory / missing[0]),
            "incomplete signing CA bundle detected: missing " + ", ".join(missing),
        )
    cert_path, key_path = directory / names["cert"], directory / names["key"]
    root_path = directory / names["root"]
    cert_certs = _certs(cert_path, "CA certificate")
    signing = cert_certs[0]
    if "chain" in names:
        chain_path = directory / names["chain"]
        chain_file_certs = _certs(chain_path, "certificate chain")
    else:  # kubernetes.io/tls: the chain files are tls.crt then ca.crt
        chain_path = cert_path
        chain_file_certs = cert_certs[1:]
    root_certs = _certs(root_path, "root certificate")
    bundle = TrustBundle(tuple(root_certs))
    intermediates = [c for c in (*cert_certs[1:], *chain_file_certs) if c != signing]
    issuer = _build_issuer(
        cert_path, key_path, signing, [c for c in intermediates if c not in bundle]
    )
    if now >= signing.not_valid_after_utc:
        raise CaMaterialError(str(cert_path), "cert chain has expired")
    try:
        verify_chain(signing, intermediates, bundle, now=now)
    except ChainVerificationError as exc:
        raise CaMaterialError(
            str(chain_path if chain_file_certs else cert_path),
            f"{names['cert']} does not verify against {names['root']}: {exc.reason}",
        ) from None
    if "chain" in names:
        check_chain_file(chain_path, chain_file_certs, signing, bundle, names)
        # Istio sends cert-chain.pem as is (split per certificate), then the root bundle.
        elements = split_pem_elements(chain_file_certs)
        chain_certs = tuple(chain_file_certs)
    else:
        elements = split_pem_elements([*cert_certs, *root_certs[:1]])
        chain_certs = (*cert_certs, *root_certs[:1])
    return CaMaterial(
        issuer=issuer,
        root_bundle=bundle,
        root_bundle_pem=_read(root_path).decode(),
        chain_pems=elements,
        chain_certificates=chain_certs,
        mode="plugged-in",
        source=directory,
    )


def check_chain_file(
    path: Path,
    chain: Sequence[x509.Certificate],
    signing: x509.Certificate,
    roots: TrustBundle,
    names: Mapping[str, str],
) -> None:
    """``cert-chain.pem`` is what callers get between their leaf and the root, so it must be the
    signing certificate's own path: ``ca-cert.pem`` first, each certificate issued by the next,
    and the last one a root of ``root-cert.pem`` or issued by one of them."""
    cert_name, root_name = names["cert"], names["root"]
    if chain[0] != signing:
        raise CaMaterialError(
            str(path),
            f"first certificate {describe_certificate(chain[0])} is not {cert_name} "
            f"({describe_certificate(signing)})",
        )
    for position, (child, parent) in enumerate(itertools.pairwise(chain), start=1):
        if not _issued_by(child, parent):
            raise CaMaterialError(
                str(path),
                f"certificate {position} {describe_certificate(child)} is not issued by "
                f"certificate {position + 1} {describe_certificate(parent)}",
            )
    last = chain[-1]
    if last not in roots and not any(_issued_by(last, root) for root in roots.certificates):
        raise CaMaterialError(
            str(path),
            f"last certificate {describe_certificate(last)} is neither in {root_name} nor "
            f"issued by one of its roots",
        )


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _key_spec(key_type: str, rsa_bits: int) -> KeySpec:
    if key_type == "rsa":
        return {2048: KeySpec.RSA_2048, 3072: KeySpec.RSA_3072, 4096: KeySpec.RSA_4096}[rsa_bits]
    return {"ec-p256": KeySpec.EC_P256, "ec-p384": KeySpec.EC_P384}[key_type]


def load_or_create_self_signed(
    data_dir: Path,
    *,
    trust_domain: TrustDomain,
    now: datetime,
    ttl: timedelta,
    key_type: str = "ec-p256",
    rsa_bits: int = 2048,
    entropy: Callable[[int], bytes] = os.urandom,
) -> CaMaterial:
    """The persisted self-signed root in ``DATA/self-signed``; generated on first start only."""
    directory = data_dir / SELF_SIGNED_DIR
    paths = {name: directory / name for name in (CA_CERT, CA_KEY, ROOT_CERT)}
    present = [n for n, p in paths.items() if p.exists()]
    if not present:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = generate_private_key(_key_spec(key_type, rsa_bits))
        root = build_self_signed_root(
            key, trust_domain=trust_domain, now=now, ttl=ttl, serial=random_serial(entropy(16))
        )
        root_pem = encode_certificate_pem(root)
        # Key first: a crash in between leaves "key without cert", which is refused loudly.
        write_atomic(paths[CA_KEY], encode_private_key_pem(key), KEY_MODE)
        write_atomic(paths[ROOT_CERT], root_pem, PUBLIC_MODE)
        write_atomic(paths[CA_CERT], root_pem, PUBLIC_MODE)
    elif len(present) != len(paths):
        missing = sorted(set(paths) - set(present))
        raise CaMaterialError(
            str(paths[missing[0]]),
            f"missing while {', '.join(sorted(present))} exist; refusing to mint a new root "
            "over half of an existing one (restore the file or empty the directory)",
        )
    mode = paths[CA_KEY].stat().st_mode & 0o777
    if mode & 0o077:
        raise CaMaterialError(str(paths[CA_KEY]), f"key file mode {mode:o} is not 0600")
    cert = _certs(paths[CA_CERT], "CA certificate")[0]
    issuer = _build_issuer(paths[CA_CERT], paths[CA_KEY], cert, [])
    roots = _certs(paths[ROOT_CERT], "root certificate")
    bundle = TrustBundle((cert, *roots))
    if now >= cert.not_valid_after_utc:
        raise CaMaterialError(str(paths[CA_CERT]), "self-signed root has expired")
    return CaMaterial(
        issuer=issuer,
        root_bundle=bundle,
        root_bundle_pem=bundle.to_pem().decode(),
        chain_pems=(),
        chain_certificates=(),
        mode="self-signed",
        source=directory,
    )


def publish_root_bundle(data_dir: Path, material: CaMaterial) -> Path:
    """Write the served root bundle to ``DATA/root-cert.pem`` (what ``meshsec ca root`` prints)."""
    path = data_dir / ROOT_BUNDLE_FILE
    write_atomic(path, material.root_bundle_pem.encode(), PUBLIC_MODE)
    return path


def load_published_root(data_dir: Path) -> str:
    path = data_dir / ROOT_BUNDLE_FILE
    if not path.exists():
        raise CaMaterialError(
            str(path), "not found: start the CA once with `meshsec ca serve --data-dir DIR`"
        )
    return _read(path).decode()


def describe_material(material: CaMaterial) -> str:
    """One line for logs: mode, signer subject, key fingerprint, root fingerprint."""
    return (
        f"mode={material.mode} source={material.source} "
        f"signer={material.issuer.certificate.subject.rfc4514_string()!r} "
        f"key={fingerprint(material.issuer.private_key.public_key())} "
        f"root=sha256:{material.root_fingerprint[:16]}"
    )


__all__ = [
    "CaMaterial",
    "PkiError",
    "describe_material",
    "load_or_create_self_signed",
    "load_plugged_in_material",
    "load_published_root",
    "publish_root_bundle",
    "split_pem_elements",
]
