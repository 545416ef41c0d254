"""``parse_jwt_expiry``: the unverified ``exp`` of the token file (for a warning and a metric)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import jwt
import pytest

from meshsec.agent.tokens import parse_jwt_expiry

EXP = 1_900_000_000


def _seg(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _token(claims: object, header: object = None) -> str:
    return f"{_seg(header or {'alg': 'RS256'})}.{_seg(claims)}.sig"


def test_reads_exp_of_a_pyjwt_token() -> None:
    token = jwt.encode({"sub": "x", "exp": EXP}, "k" * 32, algorithm="HS256")
    assert parse_jwt_expiry(token) == datetime.fromtimestamp(EXP, UTC)


@pytest.mark.parametrize(
    "token",
    [
        "opaque-token",
        "a.b",
        "a.b.c.d",
        _token({"exp": EXP}).replace(".", "..", 1),
        f"{_seg({'alg': 'x'})}.!!!.sig",
        f"{_seg({'alg': 'x'})}.{_seg(b'not json')}.sig",
        _token([1, 2]),
        _token({"exp": EXP}, header=["h"]),
        _token({"exp": "1900000000"}),
        _token({"exp": True}),
        _token({"exp": 1e300}),
        _token({"sub": "no exp"}),
        f"{_seg({'alg': 'x'})}.{'A' * 70000}.sig",
    ],
    ids=[
        "opaque", "two-parts", "four-parts", "empty-segment", "bad-base64", "not-json",
        "claims-list", "header-list", "exp-string", "exp-bool", "exp-overflow", "no-exp",
        "oversized",
    ],
)  # fmt: skip
def test_not_a_usable_exp_is_none(token: str) -> None:
    assert parse_jwt_expiry(token) is None
