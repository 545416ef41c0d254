"""Authenticators on their own: client-certificate chain checks and token checks against time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from meshsec.ca.authn import (
    AuthFailure,
    ClientCertAuthenticator,
    JwksTokenVerifier,
    KubeJwtAuthenticator,
    RequestInfo,
    authenticate_caller,
    parse_service_account_subject,
)
from meshsec.ca.errors import AuthenticationError
from meshsec.core.identity import TrustDomain
from tests.component.ca.conftest import Clusters
from tests.component.ca.support import token_for
from tests.testca import TestCA

TD = TrustDomain("cluster.local")
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
NOW = datetime.now(UTC)
_PEM = Encoding.PEM


@pytest.fixture(scope="module")
def mesh() -> TestCA:
    return TestCA()


def _cert_authn(ca: TestCA) -> ClientCertAuthenticator:
    return ClientCertAuthenticator(ca.bundle, ca.intermediates, [TD])


def _request(chain: tuple[bytes, ...] = (), **headers: str) -> RequestInfo:
    return RequestInfo(
        headers={k: (v,) for k, v in headers.items()}, peer="test", peer_chain_pem=chain, now=NOW
    )


async def test_client_cert_identity_from_verified_chain(mesh: TestCA) -> None:
    inter = mesh.intermediate("cluster1")
    svid = inter.issue_svid(SLEEP)
    # The peer sends only its leaf; the CA knows its own intermediates.
    authn = ClientCertAuthenticator(mesh.bundle, inter.intermediates, [TD])
    caller = await authn.authenticate(_request((svid.chain[0].public_bytes(_PEM),)))
    assert [str(i) for i in caller.identities] == [SLEEP]
    assert caller.authenticator == "ClientCertAuthenticator"


@pytest.mark.parametrize(
    ("make_chain", "reason"),
    [
        pytest.param(lambda m: (), "no client certificate is presented", id="none"),
        pytest.param(lambda m: (b"garbage",), "no verified chain is found", id="garbage"),
        pytest.param(
            lambda m: (TestCA().issue_svid(SLEEP).cert_chain_pem(),),
            "no verified chain is found",
            id="foreign-ca",
        ),
        pytest.param(
            lambda m: (
                m.issue_svid(
                    SLEEP, now=NOW - timedelta(hours=5), ttl=timedelta(hours=1)
                ).cert_chain_pem(),
            ),
            "expired",
            id="expired",
        ),
        pytest.param(
            lambda m: (m.issue_svid("spiffe://other.td/ns/default/sa/sleep").cert_chain_pem(),),
            "trust domain",
            id="other-trust-domain",
        ),
    ],
)
async def test_client_cert_refusals(mesh: TestCA, make_chain: object, reason: str) -> None:
    chain = make_chain(mesh)  # type: ignore[operator]
    with pytest.raises(AuthFailure, match=reason):
        await _cert_authn(mesh).authenticate(_request(chain))


def _verifier(clusters: Clusters) -> JwksTokenVerifier:
    return JwksTokenVerifier(
        clusters.cluster1.trust, audiences=("istio-ca",), skew=timedelta(seconds=30)
    )


async def test_cached_token_is_still_checked_against_the_clock(clusters: Clusters) -> None:
    verifier = _verifier(clusters)
    token = token_for(clusters.cluster1, now=NOW, ttl=timedelta(minutes=10))
    account = await verifier.verify_token(token, now=NOW)
    assert (account.namespace, account.name) == ("default", "sleep")
    # Second use hits the cache; 10 min + skew later it must be refused anyway.
    assert await verifier.verify_token(token, now=NOW + timedelta(minutes=10, seconds=29))
    with pytest.raises(AuthFailure, match="expired"):
        await verifier.verify_token(token, now=NOW + timedelta(minutes=10, seconds=31))


async def test_token_within_skew_of_nbf_is_accepted(clusters: Clusters) -> None:
    token = token_for(clusters.cluster1, now=NOW + timedelta(seconds=20))
    assert await _verifier(clusters).verify_token(token, now=NOW)


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        ("system:serviceaccount:default:sleep", None),
        ("system:serviceaccount:default", "not a service account"),
        ("system:node:worker-1:x", "not a service account"),
        ("alice", "not a service account"),
        ("system:serviceaccount::sleep", "namespace required"),
        ("system:serviceaccount:default:", "service account required"),
        (42, "not a service account"),
    ],
)
def test_service_account_subject(sub: object, message: str | None) -> None:
    if message is None:
        assert parse_service_account_subject(sub).name == "sleep"
    else:
        with pytest.raises(AuthFailure, match=message):
            parse_service_account_subject(sub)


async def test_cluster_selection_and_messages(clusters: Clusters) -> None:
    verifiers = {
        "cluster1": _verifier(clusters),
        "cluster2": JwksTokenVerifier(
            clusters.cluster2.trust, audiences=("istio-ca",), skew=timedelta(seconds=30)
        ),
    }
    authn = KubeJwtAuthenticator(verifiers, "cluster1", TD)
    t1, t2 = token_for(clusters.cluster1, now=NOW), token_for(clusters.cluster2, now=NOW)
    ok = await authn.authenticate(_request(authorization=f"Bearer {t2}", clusterid="cluster2"))
    assert ok.cluster == "cluster2"
    with pytest.raises(AuthFailure, match="no HTTP authorization header exists"):
        await authn.authenticate(_request())
    with pytest.raises(AuthFailure, match="no bearer token exists"):
        await authn.authenticate(_request(authorization=f"Basic {t1}"))
    with pytest.raises(AuthFailure, match="remote clusters \\[cluster2\\]"):
        await authn.authenticate(_request(authorization=f"Bearer {t1}", clusterid="nope"))
    # Two clusterid values: ignored (Istio honours exactly one), so the local cluster checks it.
    both = RequestInfo(
        headers={"authorization": (f"Bearer {t1}",), "clusterid": ("cluster2", "cluster1")},
        peer="test",
        now=NOW,
    )
    assert (await authn.authenticate(both)).cluster == "cluster1"


async def test_chain_reports_every_authenticator(mesh: TestCA, clusters: Clusters) -> None:
    chain = [
        _cert_authn(mesh),
        KubeJwtAuthenticator({"cluster1": _verifier(clusters)}, "cluster1", TD),
    ]
    with pytest.raises(AuthenticationError) as err:
        await authenticate_caller(chain, _request())
    assert err.value.reasons == (
        "Authenticator ClientCertAuthenticator: no client certificate is presented",
        "Authenticator KubeJWTAuthenticator: no HTTP authorization header exists",
    )
