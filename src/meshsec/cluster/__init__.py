"""A local stand-in for a Kubernetes cluster's identity parts: service-account token issuer,
JWKS, and the trust a CA places in it, so the mesh runs without Kubernetes."""

from meshsec.cluster.directory import (
    ClusterSigner,
    ClusterTrust,
    init_cluster_dir,
    load_cluster_signer,
    load_cluster_trust,
)
from meshsec.cluster.errors import ClusterDirError, ClusterError
from meshsec.cluster.tokens import DEFAULT_AUDIENCE, TokenRequest, build_token_claims, mint_token

__all__ = [
    "DEFAULT_AUDIENCE",
    "ClusterDirError",
    "ClusterError",
    "ClusterSigner",
    "ClusterTrust",
    "TokenRequest",
    "build_token_claims",
    "init_cluster_dir",
    "load_cluster_signer",
    "load_cluster_trust",
    "mint_token",
]
