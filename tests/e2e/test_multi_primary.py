"""``meshsec up examples/multi-primary --check``: per-cluster intermediates of a shared root.

The mesh comes up, the expectations run (cross-cluster mTLS between cluster1 and cluster2 in
both directions with the peer identity checked; cluster3, with its own root, refused both ways)
and it stops. Then the material it left is checked: each shared primary's CA signs with an
intermediate (``L=<cluster>``) of the one mesh root, a workload's chain carries its cluster's
intermediate, and cluster3's root is a different, self-signed one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from meshsec.core.pki import TrustBundle, parse_certificates_pem, verify_chain
from tests.e2e.test_primary_remote import copy_example
from tests.fakes.ca_process import run_meshsec

pytestmark = pytest.mark.e2e


def _certs(path: Path) -> list[x509.Certificate]:
    return parse_certificates_pem(path.read_bytes())


def test_multi_primary_check_and_its_trust_material(tmp_path: Path) -> None:
    mesh_dir = copy_example(tmp_path, "multi-primary")
    result = run_meshsec("up", str(mesh_dir), "--check", timeout=150)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "all 12 expectation(s) met" in out
    assert " FAIL " not in out  # (CERTIFICATE_VERIFY_FAILED in a detail is fine)
    for line in ("cluster1's CA", "(shared root)", "cluster3's CA", "(own root)"):
        assert line in out  # the clusters table
    assert "200 from sample/helloworld-v2@cluster2" in out  # cluster1 -> cluster2
    assert "200 from sample/helloworld-v1@cluster1" in out  # cluster2 -> cluster1
    # the four refusals with cluster3 are about trust (its services are up: sleep@cluster3 ->
    # helloworld-v3 is allowed), not a connection that failed for some other reason
    assert out.count("upstream connect error (CERTIFICATE_VERIFY_FAILED)") == 4

    state = mesh_dir / ".meshsec"
    assert not (state / "state.json").exists()  # stopped cleanly
    mesh_root = _certs(state / "mesh-root" / "root-cert.pem")[0]
    for cluster in ("cluster1", "cluster2"):
        cacerts = state / "cacerts" / cluster
        intermediate = _certs(cacerts / "ca-cert.pem")[0]
        assert intermediate.issuer == mesh_root.subject
        assert intermediate.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == (
            cluster
        )
        assert _certs(cacerts / "root-cert.pem") == [mesh_root]
        # the CA serves the shared root; the workload's chain is [leaf, its intermediate]
        assert _certs(state / "cas" / cluster / "root-cert.pem") == [mesh_root]
        chain = _certs(
            state / "workloads" / cluster / "sample" / "sleep" / "certs" / "cert-chain.pem"
        )
        assert chain[1] == intermediate
        verify_chain(chain[0], chain[1:], TrustBundle((mesh_root,)), now=datetime.now(UTC))
        published = _certs(state / "roots" / cluster / "sample" / "root-cert.pem")
        assert published == [mesh_root]
    own = _certs(state / "cas" / "cluster3" / "root-cert.pem")
    assert mesh_root not in own
    assert own[0].issuer == own[0].subject  # self-signed
    assert not (state / "cacerts" / "cluster3").exists()
    assert _certs(state / "roots" / "cluster3" / "sample" / "root-cert.pem") == own
