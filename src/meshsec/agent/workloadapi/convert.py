"""Pure conversion from the agent's secrets to SPIFFE Workload API messages.

``x509_svid`` = DER chain, leaf first, without the root; ``x509_svid_key`` = unencrypted PKCS#8
DER; ``bundle`` = the trust domain's roots as concatenated DER; bundle map keys are the trust
domain's ID ``spiffe://<td>``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding

from meshsec._proto import spiffe_workload_pb2 as pb
from meshsec.agent.secret import WorkloadSecret
from meshsec.core.pki import TrustBundle, encode_private_key_der


def build_bundle_der(bundle: TrustBundle) -> bytes:
    return b"".join(cert.public_bytes(Encoding.DER) for cert in bundle.certificates)


def build_x509_svid_response(secret: WorkloadSecret) -> pb.X509SVIDResponse:
    svid = pb.X509SVID(
        spiffe_id=str(secret.spiffe_id),
        x509_svid=b"".join(cert.public_bytes(Encoding.DER) for cert in secret.svid.chain),
        x509_svid_key=encode_private_key_der(secret.svid.private_key),
        bundle=build_bundle_der(secret.roots),
    )
    return pb.X509SVIDResponse(svids=[svid])


def build_x509_bundles_response(secret: WorkloadSecret) -> pb.X509BundlesResponse:
    trust_domain_id = str(secret.spiffe_id.trust_domain.id)
    return pb.X509BundlesResponse(bundles={trust_domain_id: build_bundle_der(secret.roots)})
