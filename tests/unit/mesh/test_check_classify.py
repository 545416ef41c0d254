"""How ``meshsec up --check`` classifies what a client saw (allowed / denied / refused)."""

from __future__ import annotations

import pytest

from meshsec.mesh.check import classify


@pytest.mark.parametrize(
    ("status", "body", "error", "verdict"),
    [
        (200, "{}", "", "allowed"),
        (404, "nope", "", "allowed"),  # the application answered
        (403, "RBAC: access denied", "", "denied"),
        (403, "forbidden by the app", "", "allowed"),
        (503, "upstream connect error or disconnect", "", "refused"),
        (0, "", "connection reset", "refused"),
    ],
    ids=["ok", "app-404", "rbac", "app-403", "upstream", "reset"],
)
def test_classify(status: int, body: str, error: str, verdict: str) -> None:
    assert classify(status, body, error)[0] == verdict
