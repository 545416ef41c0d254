"""Trust material of a multi-cluster mesh, and the certificate probe's offline checks.

* the mesh root and per-primary intermediates (``certs root`` / ``certs intermediate``) are made
  once, reused by the next run, and an intermediate is re-made when the root changed;
* ``held_certificate``: a certificate verified under the cluster's root and naming the
  workload's ID counts; one from another root, another ID, or garbage does not;
* ``ledger_entries`` matches the SPIFFE ID AND the cluster (cluster2's entry is not cluster3's),
  issued since the mesh started;
* ``request_certificate`` needs the workload's token (mounted workloads make no CSR).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshsec.ca.ledger import LEDGER_FILE, IssuedRecord, Ledger
from meshsec.core.pki import (
    TrustBundle,
    encode_certificates_pem,
    parse_certificates_pem,
    verify_chain,
)
from meshsec.core.pki.cacerts import CA_KEY, CACERTS_FILES, ROOT_CERT, ROOT_KEY
from meshsec.mesh.cert_probe import (
    CertificateSubject,
    check_certificate,
    held_certificate,
    ledger_entries,
    request_certificate,
)
from meshsec.mesh.trust import ensure_intermediate, ensure_mesh_root
from tests.testca import TestCA

NOW = datetime.now(UTC)
SID = "spiffe://cluster.local/ns/sample/sa/productpage"


def test_mesh_root_and_intermediates_are_made_once_and_follow_the_root(tmp_path: Path) -> None:
    root_dir = tmp_path / "mesh-root"
    root = ensure_mesh_root(root_dir, trust_domain="cluster.local", now=NOW)
    assert (root_dir / ROOT_KEY).stat().st_mode & 0o777 == 0o600
    reused = ensure_mesh_root(root_dir, trust_domain="cluster.local", now=NOW)
    assert reused.certificate == root.certificate
    c1 = ensure_intermediate(
        tmp_path / "c1", root, cluster="cluster1", trust_domain="cluster.local", now=NOW
    )
    assert sorted(p.name for p in c1.iterdir()) == sorted(CACERTS_FILES)
    assert (c1 / CA_KEY).stat().st_mode & 0o777 == 0o600
    first = (c1 / "ca-cert.pem").read_bytes()
    chain = parse_certificates_pem((c1 / "cert-chain.pem").read_bytes())
    verify_chain(chain[0], chain[1:], _bundle(root_dir), now=NOW)
    again = ensure_intermediate(
        tmp_path / "c1", root, cluster="cluster1", trust_domain="cluster.local", now=NOW
    )
    assert (again / "ca-cert.pem").read_bytes() == first  # reused
    # a new mesh root (its directory was reset): the intermediate is re-made under it
    for name in (ROOT_CERT, ROOT_KEY):
        (root_dir / name).unlink()
    new_root = ensure_mesh_root(root_dir, trust_domain="cluster.local", now=NOW)
    assert new_root.certificate != root.certificate
    ensure_intermediate(
        tmp_path / "c1", new_root, cluster="cluster1", trust_domain="cluster.local", now=NOW
    )
    assert (c1 / "ca-cert.pem").read_bytes() != first
    assert parse_certificates_pem((c1 / ROOT_CERT).read_bytes()) == [new_root.certificate]


def _bundle(root_dir: Path) -> TrustBundle:
    return TrustBundle.parse_pem((root_dir / ROOT_CERT).read_bytes())


def _subject(tmp_path: Path, ca: TestCA, *, token: bool = True) -> CertificateSubject:
    root = tmp_path / "root-cert.pem"
    root.write_bytes(ca.root_pem)
    token_path = tmp_path / "token"
    token_path.write_text("not-a-real-token")
    return CertificateSubject(
        "productpage.sample@cluster2",
        SID,
        "cluster2",
        tmp_path / "certs",
        root,
        "127.0.0.1:1",  # nothing listens there
        token_path if token else None,
        (tmp_path / "ca" / LEDGER_FILE,),
    )


def _hold(subject: CertificateSubject, ca: TestCA, spiffe_id: str = SID) -> None:
    svid = ca.issue_svid(spiffe_id)
    subject.cert_dir.mkdir(exist_ok=True)
    (subject.cert_dir / "cert-chain.pem").write_bytes(encode_certificates_pem(svid.chain))


@pytest.fixture(scope="module")
def shared() -> TestCA:
    return TestCA()


def test_held_certificate_must_verify_under_the_clusters_root(
    tmp_path: Path, shared: TestCA
) -> None:
    subject = _subject(tmp_path, shared)
    held, detail = held_certificate(subject, NOW)
    assert (held, detail) == (False, "the agent holds no certificate")
    _hold(subject, shared.intermediate("cluster2"))  # leaf + intermediate, shared root
    held, detail = held_certificate(subject, NOW)
    assert held, detail
    assert "verified under cluster2's root" in detail
    _hold(subject, TestCA())  # another root (cluster3's own)
    held, detail = held_certificate(subject, NOW)
    assert not held
    assert "does not verify" in detail
    _hold(subject, shared, "spiffe://cluster.local/ns/sample/sa/other")
    held, detail = held_certificate(subject, NOW)
    assert not held
    assert "not spiffe://cluster.local/ns/sample/sa/productpage" in detail
    (subject.cert_dir / "cert-chain.pem").write_text("garbage")
    assert not held_certificate(subject, NOW)[0]
    assert held_certificate(subject, NOW + timedelta(days=2))[0] is False


def test_ledger_entries_match_identity_and_cluster(tmp_path: Path, shared: TestCA) -> None:
    subject = _subject(tmp_path, shared)
    assert ledger_entries(subject) == []  # no ledger at all: nothing issued
    (tmp_path / "ca").mkdir()
    ledger = Ledger(tmp_path / "ca" / LEDGER_FILE)
    try:
        for serial, sid, cluster in (
            ("01" * 16, SID, "cluster3"),  # same ID, another cluster
            ("02" * 16, "spiffe://cluster.local/ns/sample/sa/x", "cluster2"),
        ):
            row = IssuedRecord(serial, sid, NOW, NOW, "KubeJWTAuthenticator", cluster, NOW)
            ledger.record(row).result(timeout=10)
    finally:
        ledger.close()
    assert ledger_entries(subject) == []
    ledger = Ledger(tmp_path / "ca" / LEDGER_FILE)
    try:
        row = IssuedRecord("03" * 16, SID, NOW, NOW, "KubeJWTAuthenticator", "cluster2", NOW)
        ledger.record(row).result(timeout=10)
    finally:
        ledger.close()
    assert ledger_entries(subject) == [f"{'03' * 16} (ca)"]
    # a row from an earlier run of the mesh (the ledger outlives it) does not count
    later = replace(subject, since=NOW + timedelta(seconds=1))
    assert ledger_entries(later) == []
    got, detail = asyncio.run(check_certificate(subject, "refused", NOW))
    assert got == "issued"  # the ledger says the CA issued one: not refused
    assert "CA ledger has" in detail


def test_request_certificate_needs_a_token_and_reports_an_unreachable_ca(
    tmp_path: Path, shared: TestCA
) -> None:
    signed, answer = asyncio.run(request_certificate(_subject(tmp_path, shared, token=False)))
    assert (signed, answer) == (False, "mounted certificates: the workload makes no CSR")
    signed, answer = asyncio.run(request_certificate(_subject(tmp_path, shared), wait=2))
    assert not signed
    assert answer.startswith("UNAVAILABLE"), answer
