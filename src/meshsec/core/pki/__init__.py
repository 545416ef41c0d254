"""Keys, CSRs, certificate templates, issuing, chain verification, bundles, rotation timing.

Pure: no files, sockets, clocks or randomness that is not passed in (key generation uses the OS
random source through ``cryptography``). The shells (``meshsec.ca``, ``meshsec.agent``, the CLI)
call these functions; see /work/notes/PKI_API.md for the contract.
"""

from meshsec.core.pki.bundle import TrustBundle, certificate_fingerprint
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
from meshsec.core.pki.issue import (
    build_self_signed_root,
    check_issued,
    issue_intermediate,
    issue_server_certificate,
    issue_workload_certificate,
    leaf_contract_problems,
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
from meshsec.core.pki.rotation import rotation_delay
from meshsec.core.pki.svid import X509Svid, parse_svid_chain, spiffe_id_of
from meshsec.core.pki.templates import (
    CLOCK_SKEW_GRACE,
    DEFAULT_ROOT_TTL,
    DEFAULT_WORKLOAD_TTL,
    MAX_WORKLOAD_TTL,
    Issuer,
    WorkloadCertRequest,
    build_san,
    random_serial,
)
from meshsec.core.pki.verify import (
    VerifiedChain,
    describe_certificate,
    verify_chain,
    verify_svid,
)

__all__ = [
    "CLOCK_SKEW_GRACE",
    "DEFAULT_ROOT_TTL",
    "DEFAULT_WORKLOAD_TTL",
    "MAX_CSR_BYTES",
    "MAX_WORKLOAD_TTL",
    "CaMaterialError",
    "ChainFailure",
    "ChainVerificationError",
    "InvalidCsr",
    "InvalidPem",
    "IssuanceError",
    "Issuer",
    "KeyPolicyError",
    "KeySpec",
    "ParsedCsr",
    "PkiError",
    "PrivateKey",
    "PublicKey",
    "TrustBundle",
    "VerifiedChain",
    "WorkloadCertRequest",
    "X509Svid",
    "build_csr",
    "build_san",
    "build_self_signed_root",
    "certificate_fingerprint",
    "check_issued",
    "check_public_key",
    "describe_certificate",
    "describe_public_key",
    "encode_certificate_pem",
    "encode_certificates_pem",
    "encode_csr_pem",
    "encode_private_key_der",
    "encode_private_key_pem",
    "fingerprint",
    "generate_private_key",
    "issue_intermediate",
    "issue_server_certificate",
    "issue_workload_certificate",
    "leaf_contract_problems",
    "parse_certificate_der",
    "parse_certificate_pem",
    "parse_certificates_pem",
    "parse_csr",
    "parse_private_key_pem",
    "parse_svid_chain",
    "public_key_der",
    "public_keys_equal",
    "random_serial",
    "rotation_delay",
    "signature_hash",
    "spiffe_id_of",
    "verify_chain",
    "verify_svid",
]
