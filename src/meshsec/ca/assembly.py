"""Turning ``CaSettings`` into the CA's parts: material, token verifiers, remote clusters and
the authenticator chain (client certificate first, then service-account tokens, as istiod).

Used by the supervisor (to fail fast on bad settings) and by every worker (to build its own).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from meshsec.ca.authn import (
    Authenticator,
    ClientCertAuthenticator,
    JwksTokenVerifier,
    KubeJwtAuthenticator,
    TokenVerifier,
)
from meshsec.ca.errors import CaError
from meshsec.ca.material import CaMaterial, load_or_create_self_signed, load_plugged_in_material
from meshsec.ca.metrics import CaCounters
from meshsec.cluster import ClusterError, load_cluster_trust
from meshsec.config.ca import CaSettings
from meshsec.config.errors import ConfigError
from meshsec.core.identity import TrustDomain

if TYPE_CHECKING:
    from meshsec.ca.remote_clusters import RemoteClusters


def load_material(settings: CaSettings, *, now: datetime, create: bool = True) -> CaMaterial:
    """Plugged-in ``cacerts`` when configured, else the persisted self-signed root."""
    if settings.cacerts is not None:
        return load_plugged_in_material(settings.cacerts, now=now)
    if not create and not (settings.data_dir / "self-signed").exists():
        raise CaError(f"no CA material in {settings.data_dir}")
    return load_or_create_self_signed(
        settings.data_dir,
        trust_domain=TrustDomain(settings.trust_domain),
        now=now,
        ttl=settings.self_signed_ca_cert_ttl,
        key_type=settings.ca_key_type,
        rsa_bits=settings.self_signed_ca_rsa_key_size,
    )


def build_token_verifiers(settings: CaSettings) -> tuple[dict[str, TokenVerifier], str | None]:
    """One verifier per trusted cluster (cluster dirs, then kubeconfig); the local cluster id."""
    verifiers: dict[str, TokenVerifier] = {}
    problems: list[str] = []
    local: str | None = None
    for directory in settings.clusters:
        try:
            trust = load_cluster_trust(Path(directory))
        except ClusterError as exc:
            problems.append(str(exc))
            continue
        if trust.name in verifiers:
            problems.append(f"cluster {trust.name!r} is given twice (--cluster {directory})")
            continue
        verifiers[trust.name] = JwksTokenVerifier(
            trust, audiences=settings.token_audiences, skew=settings.token_clock_skew
        )
        local = local or trust.name
    if settings.kubeconfig is not None:
        from meshsec.ca.tokenreview import TokenReviewVerifier, load_kube_api_client

        if settings.cluster_id in verifiers:
            problems.append(
                f"cluster id {settings.cluster_id!r} is both a --cluster and CLUSTER_ID"
            )
        else:
            api = load_kube_api_client(settings.kubeconfig)
            verifiers[settings.cluster_id] = TokenReviewVerifier(
                api, audiences=settings.token_audiences
            )
            local = local or settings.cluster_id
    if problems:
        raise ConfigError(problems)
    return verifiers, local


def build_remote_clusters(
    settings: CaSettings,
    verifiers: dict[str, TokenVerifier],
    local: str | None,
    *,
    counters: CaCounters | None = None,
    report: bool = True,
) -> RemoteClusters | None:
    """The remote-secrets registry (``--remote-secrets``), loaded once; None when not configured."""
    if settings.remote_secrets is None:
        return None
    from meshsec.ca.remote_clusters import RemoteClusters

    local_id = local or settings.cluster_id
    remote = RemoteClusters(
        settings.remote_secrets,
        local_cluster=local_id,
        reserved=frozenset(verifiers),
        audiences=settings.token_audiences,
        review_timeout=settings.token_review_timeout.total_seconds(),
        counters=counters,
        report=report,
        local_clusters=1 if local_id in verifiers else 0,
    )
    remote.sync()
    return remote


def build_authenticators(
    settings: CaSettings,
    material: CaMaterial,
    verifiers: dict[str, TokenVerifier] | None = None,
    local: str | None = None,
    remote: RemoteClusters | None = None,
) -> list[Authenticator]:
    """Istio's order: client certificate first, then service-account tokens."""
    td = TrustDomain(settings.trust_domain)
    chain: list[Authenticator] = [
        ClientCertAuthenticator(
            material.root_bundle,
            [*material.issuer.intermediates, *material.chain_certificates],
            [td],
        )
    ]
    if verifiers is None:
        verifiers, local = build_token_verifiers(settings)
    if remote is not None:
        chain.append(
            KubeJwtAuthenticator(
                verifiers,
                local or settings.cluster_id,
                td,
                remote=remote,
                aliases=settings.alias_map,
            )
        )
    elif verifiers and local is not None:
        chain.append(KubeJwtAuthenticator(verifiers, local, td, aliases=settings.alias_map))
    return chain
