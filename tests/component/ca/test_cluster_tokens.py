"""The local cluster stand-in: directory layout, key handling and token shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
import yaml

from meshsec.cluster import (
    ClusterDirError,
    ClusterError,
    TokenRequest,
    init_cluster_dir,
    load_cluster_signer,
    load_cluster_trust,
    mint_token,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_init_writes_key_0600_jwks_and_metadata(tmp_path: Path, algorithm: str) -> None:
    signer = init_cluster_dir(tmp_path / "c", name="east", now=NOW, algorithm=algorithm)
    assert (tmp_path / "c" / "sa-signer.key").stat().st_mode & 0o777 == 0o600
    meta = yaml.safe_load((tmp_path / "c" / "cluster.yaml").read_text())
    assert meta["name"] == "east"
    assert meta["issuer"] == "https://kubernetes.default.svc/clusters/east"
    jwks = json.loads((tmp_path / "c" / "jwks.json").read_text())
    assert [k["kid"] for k in jwks["keys"]] == [signer.kid]
    assert "d" not in jwks["keys"][0]  # public only
    assert load_cluster_trust(tmp_path / "c").keys.keys() == {signer.kid}


def test_token_has_the_projected_service_account_shape(tmp_path: Path) -> None:
    signer = init_cluster_dir(tmp_path / "c", name="east", now=NOW)
    token = mint_token(
        signer,
        TokenRequest("default", "sleep", ("istio-ca",), timedelta(hours=1), pod_name="sleep-1"),
        now=NOW,
    )
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("RS256", signer.kid)
    public = signer.private_key.public_key()
    claims = jwt.decode(
        token, public, algorithms=["RS256"], audience="istio-ca", options={"verify_exp": False}
    )
    assert claims["iss"] == signer.trust.issuer
    assert claims["sub"] == "system:serviceaccount:default:sleep"
    assert claims["aud"] == ["istio-ca"]
    iat = int(NOW.timestamp())
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (iat, iat, iat + 3600)
    k8s = claims["kubernetes.io"]
    assert k8s["namespace"] == "default"
    assert k8s["serviceaccount"]["name"] == "sleep"
    assert k8s["pod"]["name"] == "sleep-1"
    # The service account keeps its uid across tokens; jti is unique per token.
    again = jwt.decode(
        mint_token(signer, TokenRequest("default", "sleep"), now=NOW),
        options={"verify_signature": False},
    )
    assert again["kubernetes.io"]["serviceaccount"]["uid"] == k8s["serviceaccount"]["uid"]
    assert again["jti"] != claims["jti"]
    assert "pod" not in again["kubernetes.io"]


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    init_cluster_dir(tmp_path, name="a", now=NOW, algorithm="ES256")
    key = (tmp_path / "sa-signer.key").read_bytes()
    with pytest.raises(ClusterDirError, match="refusing to overwrite"):
        init_cluster_dir(tmp_path, name="b", now=NOW, algorithm="ES256")
    assert (tmp_path / "sa-signer.key").read_bytes() == key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "invalid cluster name"),
        ({"name": "a b"}, "invalid cluster name"),
        ({"name": "ok", "algorithm": "HS256"}, "unsupported token algorithm"),
    ],
)
def test_init_rejects_bad_input(tmp_path: Path, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        init_cluster_dir(tmp_path, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "sa-signer.key").exists()


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (TokenRequest("Default", "sleep"), "invalid namespace"),
        (TokenRequest("default", "sl/eep"), "invalid service account"),
        (TokenRequest("default", "sleep", ()), "audience"),
        (TokenRequest("default", "sleep", ttl=timedelta(0)), "TTL must be positive"),
    ],
)
def test_mint_rejects_bad_requests(tmp_path: Path, req: TokenRequest, message: str) -> None:
    signer = init_cluster_dir(tmp_path, name="c", now=NOW, algorithm="ES256")
    with pytest.raises(ClusterError, match=message):
        mint_token(signer, req, now=NOW)


@pytest.mark.parametrize(
    ("damage", "file_name", "message"),
    [
        (lambda d: (d / "cluster.yaml").unlink(), "cluster.yaml", "cluster init"),
        (lambda d: (d / "cluster.yaml").write_text("- a\n"), "cluster.yaml", "mapping"),
        (lambda d: (d / "jwks.json").write_text("{"), "jwks.json", "JSON"),
        (lambda d: (d / "jwks.json").write_text('{"keys": []}'), "jwks.json", "non-empty"),
        (lambda d: (d / "sa-signer.key").write_text("x"), "sa-signer.key", "PEM private key"),
    ],
)
def test_damaged_cluster_dir_names_the_file(
    tmp_path: Path, damage: object, file_name: str, message: str
) -> None:
    init_cluster_dir(tmp_path, name="c", now=NOW, algorithm="ES256")
    damage(tmp_path)  # type: ignore[operator]
    with pytest.raises(ClusterDirError, match=message) as err:
        load_cluster_signer(tmp_path)
    assert err.value.path.name == file_name
