"""The TokenReview authenticator through the official kubernetes client, against a fake API
server on loopback: the path a real Kubernetes cluster uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from meshsec.ca.authn import AuthFailure
from meshsec.ca.tokenreview import TokenReviewVerifier, load_kube_api_client
from meshsec.config.errors import ConfigError
from tests.component.ca.conftest import Clusters
from tests.component.ca.support import CaUnderTest, call, make_settings, new_csr, start_ca
from tests.fakes.tokenreview import FakeTokenReviewServer


@pytest.fixture
def apiserver() -> Iterator[FakeTokenReviewServer]:
    fake = FakeTokenReviewServer().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
async def kube_ca(
    tmp_path: Path, apiserver: FakeTokenReviewServer, clusters: Clusters
) -> AsyncIterator[CaUnderTest]:
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    settings = replace(
        make_settings(tmp_path / "data", []), kubeconfig=kubeconfig, cluster_id="Kubernetes"
    )
    ca = await start_ca(settings)
    try:
        yield ca
    finally:
        await ca.running.stop(grace=0)


async def test_token_reviewed_by_the_cluster_is_accepted(
    kube_ca: CaUnderTest, apiserver: FakeTokenReviewServer
) -> None:
    apiserver.service_account("opaque-token-1", "bookinfo", "reviews", pod="reviews-v1-abc")
    result = await call(kube_ca, new_csr()[1], token="opaque-token-1")
    assert result.code is grpc.StatusCode.OK, result.details
    [record] = kube_ca.issued()
    assert record.spiffe_id == "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    assert (record.authenticator, record.cluster) == ("KubeJWTAuthenticator", "Kubernetes")
    # The review carried the token and TOKEN_AUDIENCES.
    assert apiserver.reviews == [{"token": "opaque-token-1", "audiences": ["istio-ca"]}]


async def test_unknown_token_is_refused_and_nothing_issued(
    kube_ca: CaUnderTest, apiserver: FakeTokenReviewServer
) -> None:
    result = await call(kube_ca, new_csr()[1], token="never-issued")
    assert result.code is grpc.StatusCode.UNAUTHENTICATED
    assert kube_ca.issued() == []


STATUSES = {
    "error-field": ({"error": "token expired"}, "returns an error: token expired"),
    "not-authenticated": ({"authenticated": False}, "the token is not authenticated"),
    "user-not-in-sa-group": (
        {
            "authenticated": True,
            "user": {"username": "system:serviceaccount:a:b", "groups": ["system:authenticated"]},
        },
        "the token is not a service account",
    ),
    "bad-username": (
        {
            "authenticated": True,
            "user": {"username": "alice", "groups": ["system:serviceaccounts"]},
        },
        "invalid username field",
    ),
}


@pytest.mark.parametrize("case", list(STATUSES.values()), ids=list(STATUSES))
def test_review_status_checks(
    tmp_path: Path, apiserver: FakeTokenReviewServer, case: tuple[dict[str, object], str]
) -> None:
    status, message = case
    apiserver.statuses["t"] = status
    api = load_kube_api_client(apiserver.write_kubeconfig(tmp_path / "kc"))
    with pytest.raises(AuthFailure, match=message):
        TokenReviewVerifier(api, audiences=("istio-ca",)).review("t")


def test_api_server_errors_are_auth_failures(
    tmp_path: Path, apiserver: FakeTokenReviewServer
) -> None:
    apiserver.http_status = 403
    api = load_kube_api_client(apiserver.write_kubeconfig(tmp_path / "kc"))
    with pytest.raises(AuthFailure, match="failed to create the token review: 403"):
        TokenReviewVerifier(api, audiences=("istio-ca",)).review("t")


def test_wrong_api_credential_is_refused(tmp_path: Path, apiserver: FakeTokenReviewServer) -> None:
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kc")
    apiserver.api_token = "rotated"
    with pytest.raises(AuthFailure, match="401"):
        TokenReviewVerifier(load_kube_api_client(kubeconfig), audiences=("istio-ca",)).review("t")


def test_unreadable_kubeconfig_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(ConfigError, match="kubeconfig"):
        load_kube_api_client(bad)
