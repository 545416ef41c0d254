"""sign → record → reply: a reply means the row is committed (read from another connection)."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc

from meshsec.ca.ledger import LEDGER_FILE
from tests.component.ca.conftest import Clusters
from tests.component.ca.support import CaUnderTest, call, new_csr, token_for


def _rows(ca: CaUnderTest) -> set[str]:
    """What another process would see right now (no flush, the server keeps running)."""
    conn = sqlite3.connect(ca.settings.data_dir / LEDGER_FILE)
    try:
        return {serial for (serial,) in conn.execute("SELECT serial FROM issued")}
    finally:
        conn.close()


async def test_rows_are_committed_before_the_replies(ca: CaUnderTest, clusters: Clusters) -> None:
    token = token_for(clusters.cluster1)
    results = await asyncio.gather(*(call(ca, new_csr()[1], token=token) for _ in range(20)))
    assert all(r.code is grpc.StatusCode.OK for r in results)
    serials = {f"{r.leaf.serial_number:032x}" for r in results}
    assert _rows(ca) == serials


async def test_failed_ledger_write_answers_internal_and_hands_out_nothing(
    ca: CaUnderTest, clusters: Clusters
) -> None:
    conn = sqlite3.connect(ca.settings.data_dir / LEDGER_FILE)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON issued "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    conn.commit()
    conn.close()
    result = await call(ca, new_csr()[1], token=token_for(clusters.cluster1))
    assert result.code is grpc.StatusCode.INTERNAL
    assert result.details == "CSR signing error (CERT_GEN_ERROR)"
    assert result.chain == []
    assert ca.counter("citadel_server_success_cert_issuance_count") == 0
    assert ca.counter("citadel_server_csr_sign_err_count:CERT_GEN_ERROR") == 1
    assert _rows(ca) == set()
