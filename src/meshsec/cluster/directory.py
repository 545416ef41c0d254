"""A cluster directory: the files a local stand-in for a Kubernetes cluster's token issuer keeps.

``meshsec cluster init DIR --name NAME`` writes::

    DIR/cluster.yaml     name, issuer URL, signing algorithm, key id (metadata, world-readable)
    DIR/sa-signer.key    the service-account token signing key (PKCS#8 PEM, mode 0600)
    DIR/jwks.json        the public keys as a JWKS (what a verifier trusts)
    DIR/ca.crt, ca.key   the cluster CA that signs the API server's serving certificate
                         (``meshsec cluster serve``; ``ca.crt`` goes into kubeconfigs)

``cluster.yaml`` also holds the API server's ``apiAudiences`` (a bearer token presented to the
API must carry one; default: the issuer, as kube-apiserver) and an RBAC-like allow list::

    rbac:
    - apiGroup: authentication.k8s.io
      resource: tokenreviews
      verbs: [create]
      serviceAccounts: [istio-system/istio-reader-service-account, istio-system/istiod]

The CA reads only ``cluster.yaml`` and ``jwks.json`` (:func:`load_cluster_trust`); minting tokens
needs the key (:func:`load_cluster_signer`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from meshsec.cluster.errors import ClusterDirError, ClusterError
from meshsec.cluster.serving import CA_CERT_FILE, build_serving_ca, write_serving_ca
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, write_atomic

CLUSTER_FILE = "cluster.yaml"
KEY_FILE = "sa-signer.key"
JWKS_FILE = "jwks.json"
ALGORITHMS = ("RS256", "ES256")
READER_ACCOUNT = "istio-system/istio-reader-service-account"
ISTIOD_ACCOUNT = "istio-system/istiod"
TOKENREVIEW_GROUP = "authentication.k8s.io"
TOKENREVIEW_RESOURCE = "tokenreviews"


def default_rbac() -> list[dict[str, Any]]:
    """Who may create TokenReviews: Istio's reader account (remote secrets) and istiod."""
    return [
        {
            "apiGroup": TOKENREVIEW_GROUP,
            "resource": TOKENREVIEW_RESOURCE,
            "verbs": ["create"],
            "serviceAccounts": [READER_ACCOUNT, ISTIOD_ACCOUNT],
        }
    ]


SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
VerifyingKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class ClusterTrust:
    """What a verifier needs: the cluster's name, token issuer and public keys by key id."""

    name: str
    issuer: str
    keys: dict[str, tuple[str, VerifyingKey]]  # kid -> (JWS alg, public key)
    directory: Path


@dataclass(frozen=True)
class ClusterSigner:
    """What the token issuer needs: the trust plus the private signing key."""

    trust: ClusterTrust
    kid: str
    algorithm: str
    private_key: SigningKey


def default_issuer(name: str) -> str:
    """The issuer URL of a local cluster (shaped like a real cluster's OIDC issuer)."""
    return f"https://kubernetes.default.svc/clusters/{name}"


def compute_key_id(public_key: VerifyingKey) -> str:
    """Kubernetes' key id: unpadded base64url of SHA-256 over the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def build_jwk(public_key: VerifyingKey, kid: str, algorithm: str) -> dict[str, Any]:
    if isinstance(public_key, rsa.RSAPublicKey):
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return jwk


def _check_name(name: str) -> None:
    # A cluster id travels in the `clusterid` gRPC header: keep it to a header-safe DNS-ish label.
    if not name or len(name) > 63 or not all(c.isalnum() or c in "-_." for c in name):
        raise ClusterError(
            f"invalid cluster name {name!r}: use 1-63 letters, digits, '-', '_' or '.'"
        )


def init_cluster_dir(
    directory: Path,
    *,
    name: str,
    now: datetime,
    algorithm: str = "RS256",
    issuer: str | None = None,
) -> ClusterSigner:
    """Create a new cluster directory (refuses to overwrite an existing one)."""
    _check_name(name)
    if algorithm not in ALGORITHMS:
        raise ClusterError(f"unsupported token algorithm {algorithm!r} (use one of {ALGORITHMS})")
    if (directory / CLUSTER_FILE).exists():
        raise ClusterDirError(directory / CLUSTER_FILE, "already exists; refusing to overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    key: SigningKey
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    kid = compute_key_id(public)
    issuer = issuer or default_issuer(name)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(directory / KEY_FILE, key_pem, KEY_MODE)
    jwks = {"keys": [build_jwk(public, kid, algorithm)]}
    write_atomic(directory / JWKS_FILE, (json.dumps(jwks, indent=2) + "\n").encode(), PUBLIC_MODE)
    write_serving_ca(directory, build_serving_ca(name, now=now))
    meta = {
        "name": name,
        "issuer": issuer,
        "algorithm": algorithm,
        "keyId": kid,
        "signingKey": KEY_FILE,
        "jwks": JWKS_FILE,
        "servingCA": CA_CERT_FILE,
        "apiAudiences": [issuer],
        "rbac": default_rbac(),
        "created": now.isoformat(),
    }
    write_atomic(
        directory / CLUSTER_FILE, yaml.safe_dump(meta, sort_keys=False).encode(), PUBLIC_MODE
    )
    trust = ClusterTrust(name, issuer, {kid: (algorithm, public)}, directory)
    return ClusterSigner(trust, kid, algorithm, key)


def read_cluster_meta(directory: Path) -> dict[str, Any]:
    """``cluster.yaml`` as a mapping (name and issuer checked)."""
    return _read_meta(directory)


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / CLUSTER_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ClusterDirError(
            path, "not found (create the cluster with: meshsec cluster init DIR --name NAME)"
        ) from None
    except OSError as exc:
        raise ClusterDirError(path, exc.strerror or str(exc)) from None
    except yaml.YAMLError as exc:
        raise ClusterDirError(path, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ClusterDirError(path, "top level must be a mapping")
    for key in ("name", "issuer"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ClusterDirError(path, f"field {key!r} is missing or not a string")
    return data


def _parse_jwks(path: Path) -> dict[str, tuple[str, VerifyingKey]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterDirError(path, "not found") from None
    except (OSError, ValueError) as exc:
        raise ClusterDirError(path, f"not a readable JSON document: {exc}") from None
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ClusterDirError(path, "must hold a non-empty 'keys' list")
    keys: dict[str, tuple[str, VerifyingKey]] = {}
    for index, jwk in enumerate(entries):
        if not isinstance(jwk, dict):
            raise ClusterDirError(path, f"keys[{index}] is not an object")
        kid, kty = jwk.get("kid"), jwk.get("kty")
        if not isinstance(kid, str) or not kid:
            raise ClusterDirError(path, f"keys[{index}] has no 'kid'")
        try:
            public: Any
            if kty == "RSA":
                public = RSAAlgorithm.from_jwk(jwk)
                alg = jwk.get("alg", "RS256")
            elif kty == "EC":
                public = ECAlgorithm.from_jwk(jwk)
                alg = jwk.get("alg", "ES256")
            else:
                raise ClusterDirError(path, f"keys[{index}]: unsupported key type {kty!r}")
        except (ValueError, KeyError) as exc:
            raise ClusterDirError(path, f"keys[{index}]: invalid key: {exc}") from None
        if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ClusterDirError(path, f"keys[{index}] is not a public key")
        if alg not in ALGORITHMS:
            raise ClusterDirError(path, f"keys[{index}]: unsupported alg {alg!r}")
        keys[kid] = (alg, public)
    return keys


def load_cluster_trust(directory: Path) -> ClusterTrust:
    """Read the public side of a cluster directory (what the CA trusts)."""
    meta = _read_meta(directory)
    jwks_name = meta.get("jwks", JWKS_FILE)
    keys = _parse_jwks(directory / str(jwks_name))
    return ClusterTrust(meta["name"], meta["issuer"], keys, directory)


def load_cluster_signer(directory: Path) -> ClusterSigner:
    """Read a cluster directory including its private signing key (for minting tokens)."""
    trust = load_cluster_trust(directory)
    meta = _read_meta(directory)
    key_path = directory / str(meta.get("signingKey", KEY_FILE))
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ClusterDirError(key_path, "not found") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ClusterDirError(key_path, f"not a usable PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ClusterDirError(key_path, "only RSA and EC signing keys are supported")
    kid = compute_key_id(key.public_key())
    if kid not in trust.keys:
        raise ClusterDirError(key_path, f"key id {kid} is not in {JWKS_FILE}")
    algorithm, _ = trust.keys[kid]
    return ClusterSigner(trust, kid, algorithm, key)
