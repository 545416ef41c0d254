"""Hostile tokens of any shape end as an AuthFailure, never as another exception."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from meshsec.ca.authn import AuthFailure, JwksTokenVerifier
from tests.component.ca.conftest import Clusters

NOW = datetime.now(UTC)

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@st.composite
def tokens(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["text", "jws"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    header = draw(_json | st.fixed_dictionaries({"alg": st.text(max_size=8), "kid": _json}))
    claims = draw(_json)
    signature = draw(st.binary(max_size=80))
    sig = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    return f"{_segment(header)}.{_segment(claims)}.{sig}"


def _check(verifier: JwksTokenVerifier, token: str) -> None:
    try:
        asyncio.run(verifier.verify_token(token, now=NOW))
    except AuthFailure:
        return
    raise AssertionError(f"accepted a forged token: {token[:80]!r}")


@settings(max_examples=300, deadline=None)
@given(token=tokens())
def test_forged_tokens_are_refused_with_auth_failure(clusters: Clusters, token: str) -> None:
    verifier = JwksTokenVerifier(
        clusters.cluster1.trust, audiences=("istio-ca",), skew=timedelta(seconds=30)
    )
    _check(verifier, token)


@st.composite
def claim_sets(draw: st.DrawFn, issuer: str) -> dict[str, object]:
    """Mostly-plausible claims with one or more hostile values (right issuer half the time)."""
    good: dict[str, object] = {
        "iss": issuer,
        "sub": "system:serviceaccount:default:sleep",
        "aud": ["istio-ca"],
        "exp": int(NOW.timestamp()) + 600,
        "nbf": int(NOW.timestamp()),
        "kubernetes.io": {"namespace": "default"},
    }
    hostile = draw(st.dictionaries(st.sampled_from(sorted(good)), _json, min_size=1))
    return {**good, **hostile}


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_validly_signed_tokens_with_hostile_claims_never_crash(
    clusters: Clusters, data: st.DataObject
) -> None:
    import jwt

    signer = clusters.cluster1
    claims = data.draw(claim_sets(signer.trust.issuer))
    try:
        token = jwt.encode(claims, signer.private_key, algorithm=signer.algorithm,
                           headers={"kid": signer.kid})  # fmt: skip
    except (TypeError, ValueError):
        return  # PyJWT refuses to encode it: nothing to test
    verifier = JwksTokenVerifier(signer.trust, audiences=("istio-ca",), skew=timedelta(seconds=30))
    try:
        account = asyncio.run(verifier.verify_token(token, now=NOW))
    except AuthFailure:
        return
    # Accepted only if every rule holds.
    assert claims["iss"] == signer.trust.issuer
    aud = claims["aud"]
    assert aud == "istio-ca" or (isinstance(aud, list) and "istio-ca" in aud)
    assert claims["sub"] == f"system:serviceaccount:{account.namespace}:{account.name}"
