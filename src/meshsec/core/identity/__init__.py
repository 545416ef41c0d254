"""SPIFFE identities: IDs, trust domains and aliases."""

from meshsec.core.identity.errors import IdentityError, InvalidSpiffeId, InvalidTrustDomain
from meshsec.core.identity.spiffe_id import (
    SpiffeId,
    TrustDomain,
    TrustDomainSet,
    parse_istio_identity,
)

__all__ = [
    "IdentityError",
    "InvalidSpiffeId",
    "InvalidTrustDomain",
    "SpiffeId",
    "TrustDomain",
    "TrustDomainSet",
    "parse_istio_identity",
]
