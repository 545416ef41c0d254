"""Private and public keys: generation, the key policy, PEM encoding and log-safe fingerprints.

Key policy (what a CSR or a CA key may use), as Istio's ``MinimumRsaKeySize``: RSA 2048–8192 bits
(cryptography itself refuses even or tiny public exponents) or ECDSA on P-256 / P-384;
everything else is refused.
"""

from __future__ import annotations

import enum
import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshsec.core.pki.errors import InvalidPem, KeyPolicyError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_ALLOWED_CURVES: dict[str, str] = {"secp256r1": "P-256", "secp384r1": "P-384"}


class KeySpec(enum.Enum):
    """Key types meshsec generates; the value is the spelling used in flags and settings."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @classmethod
    def parse(cls, value: str) -> KeySpec:
        """``ec-p256`` / ``EC_P256`` / ``rsa-2048`` ...; KeyPolicyError names the allowed values."""
        norm = value.strip().lower().replace("_", "-")
        for spec in cls:
            if spec.value == norm:
                return spec
        allowed = ", ".join(s.value for s in cls)
        raise KeyPolicyError(f"unknown key type {value!r} (allowed: {allowed})")


def generate_private_key(spec: KeySpec = KeySpec.EC_P256) -> PrivateKey:
    """A fresh key of the given type (randomness comes from the OS via cryptography)."""
    if spec is KeySpec.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if spec is KeySpec.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = {KeySpec.RSA_2048: 2048, KeySpec.RSA_3072: 3072, KeySpec.RSA_4096: 4096}[spec]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def check_public_key(pub: object) -> None:
    """Raise KeyPolicyError unless ``pub`` is an allowed RSA or ECDSA public key."""
    if isinstance(pub, rsa.RSAPublicKey):
        size = pub.key_size
        if size < MIN_RSA_BITS:
            raise KeyPolicyError(f"RSA key of {size} bits is below the minimum of {MIN_RSA_BITS}")
        if size > MAX_RSA_BITS:
            raise KeyPolicyError(f"RSA key of {size} bits is above the maximum of {MAX_RSA_BITS}")
        return
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if pub.curve.name not in _ALLOWED_CURVES:
            raise KeyPolicyError(
                f"elliptic curve {pub.curve.name} is not allowed (use P-256 or P-384)"
            )
        return
    raise KeyPolicyError(f"{type(pub).__name__} keys are not allowed (use ECDSA or RSA)")


def describe_public_key(pub: object) -> str:
    """Short human description: ``ECDSA P-256``, ``RSA 2048``, or the key class name."""
    if isinstance(pub, rsa.RSAPublicKey):
        return f"RSA {pub.key_size}"
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return f"ECDSA {_ALLOWED_CURVES.get(pub.curve.name, pub.curve.name)}"
    return type(pub).__name__.lstrip("_")


def signature_hash(key: PrivateKey | PublicKey) -> hashes.SHA256 | hashes.SHA384:
    """The digest to sign with: SHA-384 for P-384, SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and (
        key.curve.name == "secp384r1"
    ):
        return hashes.SHA384()
    return hashes.SHA256()


def encode_private_key_pem(key: PrivateKey, *, pkcs8: bool = True) -> bytes:
    """Unencrypted PEM: PKCS#8 (``PRIVATE KEY``) or the traditional form (PKCS#1 / SEC1)."""
    fmt = (
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def encode_private_key_der(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER (what the SPIFFE Workload API carries)."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def parse_private_key_pem(data: bytes | str, *, what: str = "private key") -> PrivateKey:
    """Parse an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) that meets the key policy."""
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" not in raw:
        raise InvalidPem(what, "no PEM block found")
    if b"ENCRYPTED" in raw:
        raise InvalidPem(what, "encrypted private keys are not supported")
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidPem(what, _first_line(exc)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyPolicyError(f"{type(key).__name__} keys are not allowed (use ECDSA or RSA)")
    check_public_key(key.public_key())
    return key


def public_key_der(pub: PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER (the stable identity of a public key)."""
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_keys_equal(a: PublicKey, b: PublicKey) -> bool:
    """Whether two public keys are the same key (e.g. a certificate and its private key)."""
    return public_key_der(a) == public_key_der(b)


def fingerprint(pub: PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the SubjectPublicKeyInfo: safe to log."""
    return hashlib.sha256(public_key_der(pub)).hexdigest()[:16]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
