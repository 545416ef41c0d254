"""Expectation targets with impossible ports are diagnostics (int() of 5000 digits raised)."""

from __future__ import annotations

import pytest

from tests.unit.mesh.test_manifests import BASE, WORKLOAD, _errors, _expectations, _plan


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ("9" * 5000, "port has too many digits (5000): ports are 1-65535"),
        ("0", "expected service[.namespace]:port (port 1-65535)"),
        ("65536", "expected service[.namespace]:port (port 1-65535)"),
        ("²", "expected service[.namespace]:port (port 1-65535)"),
    ],
    ids=["5000-digits", "zero", "too-big", "superscript"],
)
def test_impossible_ports_are_diagnostics(port: str, expected: str) -> None:
    plan = _plan(
        BASE + WORKLOAD + _expectations(f'{{from: a.ns1, to: "svc:{port}", expect: allowed}}')
    )
    errors = _errors(plan)
    assert any(expected in e for e in errors), errors
    assert all(len(e) < 400 for e in errors)
    assert plan.expectations == ()
