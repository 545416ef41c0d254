"""Keys, CSRs, certificate templates, issuing, chain verification, bundles, rotation timing.

Pure: no files, sockets, clocks or randomness that is not passed in (key generation uses the OS
random source through ``cryptography``). The shells (``meshsec.ca``, ``meshsec.agent``, the CLI)
call these functions; see /work/notes/PKI_API.md for the contract.
"""

from meshsec.core.pki.csr import MAX_CSR_BYTES, ParsedCsr, build_csr, encode_csr_pem, parse_csr
from meshsec.core.pki.errors import (
    CaMaterialError,
    ChainFailure,
    ChainVerificationError,
    InvalidCsr,
    InvalidPem,
    IssuanceError,
    KeyPolicyError,
    PkiError,
)
from meshsec.core.pki.keys import (
    KeySpec,
    PrivateKey,
    PublicKey,
    check_public_key,
    describe_public_key,
    encode_private_key_der,
    encode_private_key_pem,
    fingerprint,
    generate_private_key,
    parse_private_key_pem,
    public_key_der,
    public_keys_equal,
    signature_hash,
)
from meshsec.core.pki.pem import (
    encode_certificate_pem,
    encode_certificates_pem,
    parse_certificate_der,
    parse_certificate_pem,
    parse_certificates_pem,
)

__all__ = [
    "MAX_CSR_BYTES",
    "CaMaterialError",
    "ChainFailure",
    "ChainVerificationError",
    "InvalidCsr",
    "InvalidPem",
    "IssuanceError",
    "KeyPolicyError",
    "KeySpec",
    "ParsedCsr",
    "PkiError",
    "PrivateKey",
    "PublicKey",
    "build_csr",
    "check_public_key",
    "describe_public_key",
    "encode_certificate_pem",
    "encode_certificates_pem",
    "encode_csr_pem",
    "encode_private_key_der",
    "encode_private_key_pem",
    "fingerprint",
    "generate_private_key",
    "parse_certificate_der",
    "parse_certificate_pem",
    "parse_certificates_pem",
    "parse_csr",
    "parse_private_key_pem",
    "public_key_der",
    "public_keys_equal",
    "signature_hash",
]
