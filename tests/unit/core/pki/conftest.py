"""Keys shared by the PKI unit tests (RSA generation is slow, so once per session)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshsec.core.pki import KeySpec, generate_private_key


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    key = generate_private_key(KeySpec.EC_P256)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    key = generate_private_key(KeySpec.RSA_2048)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="session")
def rsa1024_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (policy test)
