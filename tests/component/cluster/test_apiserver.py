"""The local cluster's Kubernetes API subset over HTTPS: TokenReview through the official
``kubernetes`` client, bearer authentication, the RBAC allow list, OIDC discovery and JWKS, and
the HTTP edges (Status errors, limits, keep-alive)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from meshsec.cluster import ClusterSigner, TokenRequest, mint_token
from meshsec.cluster.apiserver import MAX_BODY_BYTES, TOKENREVIEW_PATH, URL_FILE, ClusterApiServer
from meshsec.cluster.kubeconfig import mint_account_kubeconfig

API_AUDIENCE = "https://kubernetes.default.svc/clusters/cluster2"


def token(
    signer: ClusterSigner,
    ns: str = "bookinfo",
    sa: str = "reviews",
    *,
    aud: tuple[str, ...] = ("istio-ca",),
    pod: str | None = None,
    now: datetime | None = None,
    ttl: timedelta = timedelta(hours=1),
) -> str:
    return mint_token(signer, TokenRequest(ns, sa, aud, ttl, pod), now=now or datetime.now(UTC))


def review_api(signer: ClusterSigner, server: ClusterApiServer, account: str) -> Any:
    config = mint_account_kubeconfig(
        signer, "cluster2", server=server.url, now=datetime.now(UTC), account=account
    )
    api = k8s_config.new_client_from_config_dict(config, persist_config=False)
    return k8s_client.AuthenticationV1Api(api)


def create_review(api: Any, tok: str, audiences: list[str] | None = None) -> Any:
    body = k8s_client.V1TokenReview(
        api_version="authentication.k8s.io/v1",
        kind="TokenReview",
        spec=k8s_client.V1TokenReviewSpec(token=tok, audiences=audiences),
    )
    return api.create_token_review(body, _request_timeout=5)


def raw(
    server: ClusterApiServer,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    bearer: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=5)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if bearer:
            hdrs["Authorization"] = f"Bearer {bearer}"
        conn.request(method, path, body=body, headers=hdrs)
        response = conn.getresponse()
        data = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), data
        return response.status, json.loads(data)
    finally:
        conn.close()


def review_body(tok: str, audiences: list[str] | None = None) -> bytes:
    spec: dict[str, Any] = {"token": tok}
    if audiences is not None:
        spec["audiences"] = audiences
    return json.dumps(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
    ).encode()


def reader(signer: ClusterSigner) -> str:
    return token(signer, "istio-system", "istio-reader-service-account", aud=(API_AUDIENCE,))


# ------------------------------------------------------------------ TokenReview


def test_reader_reviews_a_pod_token_through_the_official_client(
    cluster2: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    api = review_api(cluster2, apiserver, "istio-system/istio-reader-service-account")
    result = create_review(api, token(cluster2, pod="reviews-v1-1"), ["istio-ca"])
    status = result.status
    assert status.authenticated is True
    assert not status.error
    assert status.user.username == "system:serviceaccount:bookinfo:reviews"
    assert status.user.groups == [
        "system:serviceaccounts",
        "system:serviceaccounts:bookinfo",
        "system:authenticated",
    ]
    assert status.user.extra["authentication.kubernetes.io/pod-name"] == ["reviews-v1-1"]
    assert status.user.extra["authentication.kubernetes.io/pod-uid"][0]
    assert status.user.uid
    assert status.audiences == ["istio-ca"]


def test_istiod_account_may_review_too(
    cluster2: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    api = review_api(cluster2, apiserver, "istio-system/istiod")
    assert create_review(api, token(cluster2), ["istio-ca"]).status.authenticated


AUDIENCES = {
    "intersection-only": (("istio-ca", "other"), ["other", "x"], ["other"]),
    "spec-order-kept": (("a", "b"), ["b", "a"], ["b", "a"]),
}


@pytest.mark.parametrize("case", list(AUDIENCES.values()), ids=list(AUDIENCES))
def test_status_audiences_are_the_intersection(
    cluster2: ClusterSigner,
    apiserver: ClusterApiServer,
    case: tuple[tuple[str, ...], list[str], list[str]],
) -> None:
    token_aud, wanted, expected = case
    api = review_api(cluster2, apiserver, "istio-system/istio-reader-service-account")
    status = create_review(api, token(cluster2, aud=token_aud), wanted).status
    assert status.authenticated
    assert status.audiences == expected


def test_audience_mismatch_is_not_authenticated(
    cluster2: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    api = review_api(cluster2, apiserver, "istio-system/istio-reader-service-account")
    status = create_review(api, token(cluster2, aud=("vault",)), ["istio-ca"]).status
    assert not status.authenticated
    assert 'token audiences ["vault"] is invalid for the target audiences ["istio-ca"]' in (
        status.error
    )


def test_no_spec_audiences_means_the_api_audiences(
    cluster2: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    api = review_api(cluster2, apiserver, "istio-system/istio-reader-service-account")
    assert not create_review(api, token(cluster2)).status.authenticated  # aud istio-ca only
    assert create_review(api, token(cluster2, aud=(API_AUDIENCE,))).status.authenticated


def test_tokens_of_another_cluster_and_expired_tokens_are_refused(
    cluster2: ClusterSigner, other_cluster: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    api = review_api(cluster2, apiserver, "istio-system/istio-reader-service-account")
    foreign = create_review(api, token(other_cluster), ["istio-ca"]).status
    assert not foreign.authenticated
    assert "no key of this cluster" in foreign.error
    old = datetime.now(UTC) - timedelta(hours=3)
    expired = create_review(api, token(cluster2, now=old), ["istio-ca"]).status
    assert not expired.authenticated
    assert "expired" in expired.error
    tampered = token(cluster2)
    head, payload, sig = tampered.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "system:serviceaccount:istio-system:istiod"
    forged = ".".join(
        [head, base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(), sig]
    )
    bad_sig = create_review(api, forged, ["istio-ca"]).status
    assert not bad_sig.authenticated
    assert "signature" in bad_sig.error


# ------------------------------------------------------------------ callers


def test_unauthenticated_callers_get_401(
    cluster2: ClusterSigner, other_cluster: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    body = review_body(token(cluster2))
    for bearer in (
        None,
        "not-a-jwt",
        token(cluster2, "istio-system", "istio-reader-service-account"),  # aud istio-ca
        token(other_cluster, "istio-system", "istio-reader-service-account", aud=(API_AUDIENCE,)),
    ):
        code, status = raw(apiserver, "POST", TOKENREVIEW_PATH, body=body, bearer=bearer)
        assert (code, status["kind"], status["reason"], status["code"]) == (
            401,
            "Status",
            "Unauthorized",
            401,
        )


def test_accounts_outside_the_allow_list_get_403(
    cluster2: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    caller = token(cluster2, "default", "sleep", aud=(API_AUDIENCE,))
    code, status = raw(
        apiserver, "POST", TOKENREVIEW_PATH, body=review_body(token(cluster2)), bearer=caller
    )
    assert code == 403
    assert status["reason"] == "Forbidden"
    assert status["message"] == (
        'tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:default:'
        'sleep" cannot create resource "tokenreviews" in API group "authentication.k8s.io" at '
        "the cluster scope"
    )
    assert status["details"] == {"group": "authentication.k8s.io", "kind": "tokenreviews"}


BAD_BODIES = {
    "not-json": (b"{", 400),
    "not-a-tokenreview": (b'{"kind": "Pod", "apiVersion": "v1"}', 400),
    "wrong-version": (
        b'{"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1beta1"}',
        400,
    ),
    "no-token": (
        b'{"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": {}}',
        400,
    ),
}


@pytest.mark.parametrize("case", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_review_bodies_get_a_400_status(
    cluster2: ClusterSigner, apiserver: ClusterApiServer, case: tuple[bytes, int]
) -> None:
    body, expected = case
    code, status = raw(apiserver, "POST", TOKENREVIEW_PATH, body=body, bearer=reader(cluster2))
    assert code == expected
    assert status["kind"] == "Status"
    assert status["message"]


def test_oversized_body_is_refused_before_reading(
    cluster2: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    ctx = ssl.create_default_context(cadata=apiserver.ca_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", apiserver.port, context=ctx, timeout=5)
    conn.putrequest("POST", TOKENREVIEW_PATH)
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.putheader("Authorization", f"Bearer {reader(cluster2)}")
    conn.endheaders()
    response = conn.getresponse()
    status = json.loads(response.read())
    assert response.status == 413
    assert status["reason"] == "RequestEntityTooLarge"
    conn.close()


def test_routes_and_methods(cluster2: ClusterSigner, apiserver: ClusterApiServer) -> None:
    assert raw(apiserver, "GET", "/api/v1/secrets")[0] == 404
    assert raw(apiserver, "GET", TOKENREVIEW_PATH)[0] == 405
    assert raw(apiserver, "DELETE", TOKENREVIEW_PATH)[0] == 405


def test_keep_alive_serves_several_requests_on_one_connection(
    cluster2: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    ctx = ssl.create_default_context(cadata=apiserver.ca_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", apiserver.port, context=ctx, timeout=5)
    for _ in range(3):
        conn.request(
            "POST",
            TOKENREVIEW_PATH,
            body=review_body(token(cluster2), ["istio-ca"]),
            headers={"Authorization": f"Bearer {reader(cluster2)}"},
        )
        response = conn.getresponse()
        assert response.status == 201
        assert json.loads(response.read())["status"]["authenticated"] is True
    conn.close()


# ------------------------------------------------------------------ discovery, TLS


def test_oidc_discovery_and_jwks(cluster2: ClusterSigner, apiserver: ClusterApiServer) -> None:
    code, discovery = raw(apiserver, "GET", "/.well-known/openid-configuration")
    assert code == 200
    assert discovery["issuer"] == cluster2.trust.issuer
    assert discovery["jwks_uri"] == f"{apiserver.url}/openid/v1/jwks"
    assert discovery["id_token_signing_alg_values_supported"] == ["ES256"]
    code, jwks = raw(apiserver, "GET", "/openid/v1/jwks")
    on_disk = json.loads((cluster2.trust.directory / "jwks.json").read_text())
    assert code == 200
    assert jwks == on_disk


def test_server_certificate_chains_to_the_cluster_ca_only(
    other_cluster: ClusterSigner, apiserver: ClusterApiServer
) -> None:
    wrong = ssl.create_default_context(
        cadata=(other_cluster.trust.directory / "ca.crt").read_text()
    )
    conn = http.client.HTTPSConnection("127.0.0.1", apiserver.port, context=wrong, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/healthz")
    conn.close()


def test_url_file_is_written_while_serving_and_removed_after(other_cluster: ClusterSigner) -> None:
    directory: Path = other_cluster.trust.directory
    server = ClusterApiServer(directory).start()
    try:
        assert (directory / URL_FILE).read_text().strip() == server.url
    finally:
        server.stop()
    assert not (directory / URL_FILE).exists()


def test_cluster_kubeconfig_command_gives_istiod_a_working_client(
    cluster2: ClusterSigner, apiserver: ClusterApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from meshsec.cli.main import main

    assert main(["cluster", "kubeconfig", str(cluster2.trust.directory)]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["clusters"][0]["cluster"]["server"] == apiserver.url
    api = k8s_client.AuthenticationV1Api(
        k8s_config.new_client_from_config_dict(config, persist_config=False)
    )
    assert create_review(api, token(cluster2), ["istio-ca"]).status.authenticated
    assert (
        main(["cluster", "kubeconfig", str(cluster2.trust.directory), "--service-account", "x"])
        == 2
    )


def test_cluster_dir_without_a_ca_gets_one_on_first_serve(other_cluster: ClusterSigner) -> None:
    directory: Path = other_cluster.trust.directory
    old = (directory / "ca.crt").read_bytes()
    (directory / "ca.crt").unlink()
    (directory / "ca.key").unlink()
    with ClusterApiServer(directory, write_url_file=False) as server:
        assert (directory / "ca.crt").read_bytes() == server.ca_pem != old
        assert (directory / "ca.key").stat().st_mode & 0o777 == 0o600
        assert raw(server, "GET", "/openid/v1/jwks")[0] == 200


def test_half_a_ca_is_refused(tmp_path: Path, other_cluster: ClusterSigner) -> None:
    import shutil

    from meshsec.cluster.errors import ClusterDirError

    directory = tmp_path / "c"
    shutil.copytree(other_cluster.trust.directory, directory)
    (directory / "ca.key").unlink()
    with pytest.raises(ClusterDirError, match=r"ca\.key: not found"):
        ClusterApiServer(directory)
