"""In-flight limit, the error-to-status table, and the metrics the supervisor serves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest

from meshsec.ca.authn import AuthFailure, Caller, RequestInfo
from meshsec.ca.errors import (
    AuthenticationError,
    CaNotReady,
    ImpersonationError,
    LedgerError,
    Overloaded,
    RequestRejected,
    TtlError,
)
from meshsec.ca.metrics import (
    CaCollector,
    CaCounters,
    allocate_counter_table,
    build_registry,
    parse_metrics_text,
)
from meshsec.ca.service import ERROR_TO_STATUS, lookup_status
from meshsec.core.identity import SpiffeId
from meshsec.core.pki import CaMaterialError, InvalidCsr, InvalidPem, IssuanceError, KeyPolicyError
from tests.component.ca.conftest import Clusters
from tests.component.ca.support import call, make_settings, new_csr, start_ca, token_for


class GateAuthenticator:
    """Holds every call until the test opens the gate; then authenticates as default/sleep."""

    name = "GateAuthenticator"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0
        self.arrived = asyncio.Event()

    async def authenticate(self, request: RequestInfo) -> Caller:
        self.waiting += 1
        self.arrived.set()
        await self.gate.wait()
        if not request.header("authorization"):
            raise AuthFailure("no token")
        sid = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/sleep")
        return Caller((sid,), self.name, "")


async def test_in_flight_limit_answers_resource_exhausted(
    tmp_path: Path, clusters: Clusters
) -> None:
    gate = GateAuthenticator()
    settings = make_settings(tmp_path, clusters.trusted_dirs, max_in_flight=1)
    ca = await start_ca(settings, authenticators=[gate])
    try:
        token = token_for(clusters.cluster1)
        first = asyncio.create_task(call(ca, new_csr()[1], token=token))
        await asyncio.wait_for(gate.arrived.wait(), 5)
        second = await call(ca, new_csr()[1], token=token)
        assert second.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert second.details == "CA is overloaded, retry later"
        gate.gate.set()
        assert (await asyncio.wait_for(first, 10)).code is grpc.StatusCode.OK
        assert len(ca.issued()) == 1
        # The slot is free again.
        assert (await call(ca, new_csr()[1], token=token)).code is grpc.StatusCode.OK
        assert ca.running.service.in_flight == 0
    finally:
        await ca.running.stop(grace=0)


ERRORS = {
    "authentication": (AuthenticationError(["x"]), grpc.StatusCode.UNAUTHENTICATED, None),
    "impersonation": (ImpersonationError("x"), grpc.StatusCode.UNAUTHENTICATED, None),
    "invalid-csr": (InvalidCsr("x"), grpc.StatusCode.INVALID_ARGUMENT, "CSR_ERROR"),
    "invalid-pem": (InvalidPem("CSR", "x"), grpc.StatusCode.INVALID_ARGUMENT, "CSR_ERROR"),
    "key-policy": (KeyPolicyError("x"), grpc.StatusCode.INVALID_ARGUMENT, "CSR_ERROR"),
    "ttl": (
        TtlError(timedelta(days=91), timedelta(days=90)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TTL_ERROR",
    ),
    "ca-not-ready": (CaNotReady("x"), grpc.StatusCode.INTERNAL, "CA_NOT_READY"),
    "cert-gen": (IssuanceError("x"), grpc.StatusCode.INTERNAL, "CERT_GEN_ERROR"),
    "request-rejected": (RequestRejected("x"), grpc.StatusCode.INVALID_ARGUMENT, None),
    "overloaded": (Overloaded(1), grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    "ledger-write": (LedgerError("ledger.sqlite", "x"), grpc.StatusCode.INTERNAL, "CERT_GEN_ERROR"),
}


@pytest.mark.parametrize("case", list(ERRORS.values()), ids=list(ERRORS))
def test_error_to_status_table(case: tuple[Exception, grpc.StatusCode, str | None]) -> None:
    exc, code, label = case
    mapping = lookup_status(exc)
    assert (mapping.code, mapping.sign_error) == (code, label)


def test_every_table_entry_is_covered() -> None:
    assert {type(e) for e, _, _ in ERRORS.values()} == set(ERROR_TO_STATUS)


def test_unmapped_errors_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        lookup_status(CaMaterialError("x", "y"))  # a start-up error, never a request outcome


def test_internal_errors_do_not_leak_details() -> None:
    mapping = lookup_status(IssuanceError("signing key /secret/path unreadable"))
    assert "{detail}" not in mapping.message


def test_collector_sums_workers_with_istio_names() -> None:
    table = allocate_counter_table(2)
    w0, w1 = CaCounters(table, 0), CaCounters(table, 1)
    w0.inc("citadel_server_csr_count")
    w1.inc("citadel_server_csr_count")
    w1.inc("citadel_server_success_cert_issuance_count")
    w0.sign_error("TTL_ERROR")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    collector = CaCollector(
        table,
        2,
        root_not_after=now + timedelta(days=10),
        chain_not_after=None,
        now=lambda: now,
    )
    text = generate_latest(build_registry(collector)).decode()
    values = parse_metrics_text(text)
    assert values["citadel_server_csr_count"] == 2
    assert values["citadel_server_success_cert_issuance_count"] == 1
    assert values['citadel_server_csr_sign_err_count{error="TTL_ERROR"}'] == 1
    assert values['citadel_server_csr_sign_err_count{error="CSR_ERROR"}'] == 0
    assert values["citadel_server_root_cert_expiry_seconds"] == 10 * 86400
    assert values["citadel_server_root_cert_expiry_timestamp"] == (now + timedelta(10)).timestamp()
    assert "citadel_server_cert_chain_expiry_seconds" not in values
    assert "_total" not in text
