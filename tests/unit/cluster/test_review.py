"""TokenReview decisions (pure): what kube-apiserver's service-account authenticator decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from meshsec.cluster import ClusterSigner, TokenRequest, init_cluster_dir, mint_token
from meshsec.cluster.errors import ClusterDirError
from meshsec.cluster.review import TokenInvalid, parse_api_policy, review_token

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> ClusterSigner:
    return init_cluster_dir(
        tmp_path_factory.mktemp("c") / "c", name="cluster2", now=NOW, algorithm="ES256"
    )


def _claims(signer: ClusterSigner, **changes: Any) -> str:
    claims = jwt.decode(
        mint_token(signer, TokenRequest("ns", "sa", ("istio-ca",)), now=NOW),
        options={"verify_signature": False},
    )
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, signer.private_key, algorithm="ES256", headers={"kid": signer.kid})


def test_valid_token_gives_kubernetes_user(signer: ClusterSigner) -> None:
    tok = mint_token(signer, TokenRequest("ns", "sa", ("istio-ca",), pod_name="p-1"), now=NOW)
    user = review_token(signer.trust, tok, audiences=["istio-ca"], now=NOW)
    assert user.username == "system:serviceaccount:ns:sa"
    assert user.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:ns",
        "system:authenticated",
    )
    assert user.extra["authentication.kubernetes.io/pod-name"] == ("p-1",)
    assert user.extra["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")
    assert user.service_account == "ns/sa"


CASES = {
    "expired": (lambda s: _claims(s, exp=int((NOW - timedelta(minutes=2)).timestamp())), "expired"),
    "within-leeway": (
        lambda s: _claims(s, exp=int((NOW - timedelta(seconds=30)).timestamp())),
        None,
    ),
    "not-yet-valid": (
        lambda s: _claims(s, nbf=int((NOW + timedelta(minutes=5)).timestamp())),
        "not valid yet",
    ),
    "no-exp": (lambda s: _claims(s, exp=None), "expired"),
    "other-issuer": (lambda s: _claims(s, iss="https://evil"), "another issuer"),
    "wrong-audience": (lambda s: _claims(s, aud=["vault"]), "invalid for the target audiences"),
    "string-audience": (lambda s: _claims(s, aud="istio-ca"), None),
    "not-a-service-account": (lambda s: _claims(s, sub="alice"), "not a service account"),
    "empty-namespace": (
        lambda s: _claims(s, sub="system:serviceaccount::sa"),
        "not a service account",
    ),
    "garbage": (lambda s: "x.y", "not a compact JWS"),
    "alg-none": (
        lambda s: jwt.encode({"sub": "x"}, None, algorithm="none", headers={"kid": s.kid}),
        "signature",
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_review_rules(signer: ClusterSigner, case: tuple[Any, str | None]) -> None:
    make, error = case
    tok = make(signer)
    if error is None:
        assert review_token(signer.trust, tok, audiences=["istio-ca"], now=NOW).username
    else:
        with pytest.raises(TokenInvalid, match=error):
            review_token(signer.trust, tok, audiences=["istio-ca"], now=NOW)


def test_api_policy_from_rbac_rules() -> None:
    meta = {
        "rbac": [
            {
                "apiGroup": "authentication.k8s.io",
                "resource": "tokenreviews",
                "verbs": ["create"],
                "serviceAccounts": ["istio-system/reader"],
            },
            {
                "apiGroup": "",
                "resource": "secrets",
                "verbs": ["create"],
                "serviceAccounts": ["a/b"],
            },
            {
                "apiGroup": "authentication.k8s.io",
                "resource": "tokenreviews",
                "verbs": ["get"],
                "serviceAccounts": ["c/d"],
            },
        ]
    }
    policy = parse_api_policy(meta, "https://iss", Path("cluster.yaml"))
    assert policy.token_reviewers == frozenset({"istio-system/reader"})
    assert policy.api_audiences == ("https://iss",)


@pytest.mark.parametrize(
    "meta",
    [{"rbac": {}}, {"rbac": [{"serviceAccounts": ["nonamespace"]}]}, {"apiAudiences": "x"}],
    ids=["rbac-not-list", "account-not-ns-name", "audiences-not-list"],
)
def test_bad_api_policy_names_the_file(meta: dict[str, Any]) -> None:
    with pytest.raises(ClusterDirError, match=r"cluster\.yaml"):
        parse_api_policy(meta, "https://iss", Path("cluster.yaml"))
