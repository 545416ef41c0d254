"""The CA writes IstioCertificateResponse bytes itself: they must be protobuf's, byte for byte."""

from __future__ import annotations

import pytest

from meshsec._proto import istio_ca_pb2
from meshsec.ca.service import encode_chain_element

SIZES = [0, 1, 127, 128, 300, 16_383, 16_384, 2_097_152]


@pytest.mark.parametrize("size", SIZES, ids=[f"{n}-bytes" for n in SIZES])
def test_element_encoding_is_protobufs(size: int) -> None:
    element = ("A" * size).encode()
    expected = istio_ca_pb2.IstioCertificateResponse(cert_chain=[element.decode()])
    assert encode_chain_element(element) == expected.SerializeToString()


def test_a_chain_is_its_elements_concatenated_and_parses_back() -> None:
    chain = ["-----BEGIN CERTIFICATE-----\nleaf\n", "intermediate\n", "root bundle ✓\n"]
    encoded = b"".join(encode_chain_element(e.encode()) for e in chain)
    assert encoded == istio_ca_pb2.IstioCertificateResponse(cert_chain=chain).SerializeToString()
    assert list(istio_ca_pb2.IstioCertificateResponse.FromString(encoded).cert_chain) == chain
