"""Key generation, the key policy, PEM encoding and fingerprints."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from meshsec.core.pki import (
    InvalidPem,
    KeyPolicyError,
    KeySpec,
    check_public_key,
    describe_public_key,
    encode_private_key_pem,
    fingerprint,
    generate_private_key,
    parse_private_key_pem,
    public_keys_equal,
)


@pytest.mark.parametrize(
    ("spec", "description"),
    [(KeySpec.EC_P256, "ECDSA P-256"), (KeySpec.EC_P384, "ECDSA P-384")],
    ids=["p256", "p384"],
)
def test_generate_ec(spec: KeySpec, description: str) -> None:
    key = generate_private_key(spec)
    check_public_key(key.public_key())
    assert describe_public_key(key.public_key()) == description


def test_generate_rsa(rsa_key: rsa.RSAPrivateKey) -> None:
    assert rsa_key.key_size == 2048
    assert describe_public_key(rsa_key.public_key()) == "RSA 2048"


@pytest.mark.parametrize(
    ("text", "spec"),
    [("ec-p256", KeySpec.EC_P256), ("EC_P384", KeySpec.EC_P384), (" rsa-2048 ", KeySpec.RSA_2048)],
    ids=["value", "enum-name", "spaces"],
)
def test_keyspec_parse(text: str, spec: KeySpec) -> None:
    assert KeySpec.parse(text) is spec


def test_keyspec_parse_unknown_lists_allowed() -> None:
    with pytest.raises(KeyPolicyError, match=r"unknown key type 'dsa'.*ec-p256"):
        KeySpec.parse("dsa")


def _rsa_public(bits: int) -> rsa.RSAPublicKey:
    # A modulus of exactly `bits` bits; primality is irrelevant to the size policy.
    n = (1 << (bits - 1)) | 1
    return rsa.RSAPublicNumbers(65537, n).public_key()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _rsa_public(1024), "RSA key of 1024 bits is below the minimum of 2048"),
        (lambda: _rsa_public(2047), "RSA key of 2047 bits is below the minimum of 2048"),
        (lambda: _rsa_public(8200), "RSA key of 8200 bits is above the maximum of 8192"),
        (
            lambda: ec.generate_private_key(ec.SECP521R1()).public_key(),
            "elliptic curve secp521r1 is not allowed",
        ),
        (
            lambda: ec.generate_private_key(ec.SECP256K1()).public_key(),
            "elliptic curve secp256k1 is not allowed",
        ),
        (
            lambda: ed25519.Ed25519PrivateKey.generate().public_key(),
            "keys are not allowed",
        ),
        (lambda: "not a key", "str keys are not allowed"),
    ],
    ids=["rsa1024", "rsa2047", "rsa8200", "p521", "secp256k1", "ed25519", "str"],
)
def test_check_public_key_rejects(make: object, reason: str) -> None:
    assert callable(make)
    with pytest.raises(KeyPolicyError, match=reason):
        check_public_key(make())


@pytest.mark.parametrize("bits", [2048, 4096, 8192], ids=["2048", "4096", "8192"])
def test_check_public_key_accepts_rsa_sizes(bits: int) -> None:
    check_public_key(_rsa_public(bits))


@pytest.mark.parametrize("pkcs8", [True, False], ids=["pkcs8", "traditional"])
def test_private_key_pem_round_trip(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey, pkcs8: bool
) -> None:
    for key, traditional_label in ((ec_key, b"EC PRIVATE KEY"), (rsa_key, b"RSA PRIVATE KEY")):
        pem = encode_private_key_pem(key, pkcs8=pkcs8)
        label = b"PRIVATE KEY" if pkcs8 else traditional_label
        assert pem.startswith(b"-----BEGIN " + label + b"-----")
        back = parse_private_key_pem(pem)
        assert public_keys_equal(back.public_key(), key.public_key())


def test_parse_private_key_rejects_weak_rsa(rsa1024_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(KeyPolicyError, match="1024 bits"):
        parse_private_key_pem(encode_private_key_pem(rsa1024_key))


def test_parse_private_key_rejects_ed25519() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyPolicyError, match="Ed25519"):
        parse_private_key_pem(pem)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no PEM block found"),
        (b"hello", "no PEM block found"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "invalid private key"),
        (
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA\n",
            "encrypted private keys are not supported",
        ),
    ],
    ids=["empty", "garbage", "bad-base64-body", "encrypted"],
)
def test_parse_private_key_garbage(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidPem, match=reason):
        parse_private_key_pem(data, what="private key")


def test_fingerprint_is_short_stable_and_key_specific(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    fp = fingerprint(ec_key.public_key())
    assert len(fp) == 16
    assert int(fp, 16) >= 0
    assert fp == fingerprint(ec_key.public_key())
    assert fp != fingerprint(rsa_key.public_key())
    assert not public_keys_equal(ec_key.public_key(), rsa_key.public_key())
