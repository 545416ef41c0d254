"""Istio's cluster selection for a token (``getKubeClient``): empty cluster id and aliases mean
local, then the remote of that id, then of its alias; an unknown id names what is known."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meshsec.ca.authn import (
    AuthFailure,
    KubeJwtAuthenticator,
    RequestInfo,
    ServiceAccount,
    TokenVerifier,
    UnknownClusterFailure,
)
from meshsec.core.identity import TrustDomain


class Named:
    def __init__(self, cluster: str) -> None:
        self.cluster = cluster

    async def verify_token(self, token: str, *, now: datetime) -> ServiceAccount:
        return ServiceAccount("ns", f"sa-{self.cluster}")


class Lookup:
    def __init__(self, clusters: dict[str, TokenVerifier]) -> None:
        self.clusters = clusters

    def get(self, cluster_id: str) -> TokenVerifier | None:
        return self.clusters.get(cluster_id)

    def cluster_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.clusters))


def authenticator(remote: dict[str, TokenVerifier] | None = None) -> KubeJwtAuthenticator:
    return KubeJwtAuthenticator(
        {"cluster1": Named("cluster1"), "static": Named("static")},
        "cluster1",
        TrustDomain("cluster.local"),
        remote=Lookup(remote if remote is not None else {"cluster2": Named("cluster2")}),
        aliases={"old1": "cluster1", "old2": "cluster2", "ghost": "nowhere"},
    )


def request(*cluster: str) -> RequestInfo:
    headers = {"authorization": ("Bearer tok",)}
    if cluster:
        headers["clusterid"] = cluster
    return RequestInfo(headers=headers, peer="ipv4:127.0.0.1:1", now=datetime.now(UTC))


CASES = {
    "no-header-is-local": ((), "cluster1"),
    "empty-is-local": (("",), "cluster1"),
    "local-id": (("cluster1",), "cluster1"),
    "alias-of-local": (("old1",), "cluster1"),
    "remote-from-secret": (("cluster2",), "cluster2"),
    "alias-of-remote": (("old2",), "cluster2"),
    "static-remote": (("static",), "static"),
    "two-headers-is-local": (("cluster2", "x"), "cluster1"),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_selection(case: tuple[tuple[str, ...], str]) -> None:
    headers, expected = case
    caller = await authenticator().authenticate(request(*headers))
    assert caller.cluster == expected
    assert str(caller.identities[0]) == f"spiffe://cluster.local/ns/ns/sa/sa-{expected}"


@pytest.mark.parametrize("cluster", ["cluster9", "ghost"], ids=["unknown", "alias-to-unknown"])
async def test_unknown_cluster_uses_istios_message(cluster: str) -> None:
    with pytest.raises(UnknownClusterFailure) as info:
        await authenticator().authenticate(request(cluster))
    assert str(info.value) == (
        f'client claims to be in cluster "{cluster}", but we only know about local cluster '
        '"cluster1" and remote clusters [cluster2 static]'
    )


async def test_removed_remote_is_unknown_at_once() -> None:
    remote: dict[str, TokenVerifier] = {"cluster2": Named("cluster2")}
    auth = authenticator(remote)
    assert (await auth.authenticate(request("cluster2"))).cluster == "cluster2"
    del remote["cluster2"]
    with pytest.raises(UnknownClusterFailure):
        await auth.authenticate(request("cluster2"))


async def test_no_local_verifier_is_a_clear_failure() -> None:
    auth = KubeJwtAuthenticator({}, "Kubernetes", TrustDomain("cluster.local"), remote=Lookup({}))
    with pytest.raises(AuthFailure, match="no token verifier is configured for local cluster"):
        await auth.authenticate(request())
