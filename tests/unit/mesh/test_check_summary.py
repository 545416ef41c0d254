"""What an allowed row says: who answered, and the client identity its sidecar verified."""

from __future__ import annotations

import json

import pytest

from meshsec.mesh.check import classify

XFCC = (
    'By=spiffe://cluster.local/ns/sample/sa/helloworld;Hash=ab12;Subject="";'
    "URI=spiffe://cluster.local/ns/sample/sa/sleep"
)


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (
            XFCC,
            "200 from sample/helloworld-v2@cluster2 (saw client spiffe://cluster.local/ns/sample/sa/sleep)",
        ),
        ("(plaintext, no client cert)", "200 from sample/helloworld-v2@cluster2"),
        (
            f"By=x;URI=spiffe://td/ns/a/sa/first,{XFCC}",
            "saw client spiffe://cluster.local/ns/sample/sa/sleep",
        ),
        (
            "By=spiffe://cluster.local/ns/sample/sa/helloworld;Hash=ab12",
            "200 from sample/helloworld-v2@cluster2",
        ),
    ],
    ids=["mtls", "plaintext", "last-element", "no-uri"],
)
def test_allowed_names_the_verified_client(client: str, expected: str) -> None:
    body = json.dumps({"workload": "sample/helloworld-v2@cluster2", "client": client})
    verdict, detail = classify(200, body, "")
    assert verdict == "allowed"
    if expected.startswith("200"):
        assert detail == expected
    else:
        assert expected in detail
