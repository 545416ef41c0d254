"""Projected tokens (refreshed at 80%) and mounted istio.<sa> secrets (rotated at half-life)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from meshsec.ca.ledger import IssuedRecord
from meshsec.ca.material import load_or_create_self_signed
from meshsec.cluster import init_cluster_dir, load_cluster_signer
from meshsec.core.identity import TrustDomain
from meshsec.core.pki import PkiError, TrustBundle, X509Svid, verify_svid
from meshsec.mesh.credentials import MountedSecret, ProjectedToken
from tests.fakes.clock import FakeClock


async def test_token_is_reminted_at_80_percent_of_its_life(tmp_path: Path) -> None:
    clock = FakeClock()
    cluster = tmp_path / "cluster"
    init_cluster_dir(cluster, name="c1", now=clock.now())
    path = tmp_path / "w" / "token"
    token = ProjectedToken(
        load_cluster_signer(cluster), path, "ns1", "sa1", "pod1", timedelta(minutes=10), clock
    )
    token.refresh()
    first = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    claims = jwt.decode(first, options={"verify_signature": False})
    assert claims["kubernetes.io"]["namespace"] == "ns1"
    task = asyncio.create_task(token.run())
    try:
        await clock.wait_for_sleepers(1)
        clock.advance(timedelta(minutes=7, seconds=59))
        await asyncio.sleep(0)
        assert path.read_text() == first
        clock.advance(timedelta(seconds=1))
        await clock.wait_for_sleepers(1)
        assert token.refreshed == 2
        assert path.read_text() != first
    finally:
        task.cancel()


async def test_mounted_secret_is_signed_by_the_ca_and_rotates(tmp_path: Path) -> None:
    clock = FakeClock()
    material = load_or_create_self_signed(
        tmp_path / "ca",
        trust_domain=TrustDomain("cluster.local"),
        now=clock.now(),
        ttl=timedelta(days=365),
    )
    directory = tmp_path / "mounted" / "ns1" / "istio.sa1"
    issued: list[IssuedRecord] = []
    secret = MountedSecret(
        material,
        directory,
        "ns1",
        "sa1",
        "cluster.local",
        timedelta(hours=1),
        clock,
        rand=lambda: 0.5,
        on_issued=issued.append,
    )
    secret.issue()
    assert [(r.serial, r.spiffe_id, r.authenticator) for r in issued] == [
        (secret.serial_hex, "spiffe://cluster.local/ns/ns1/sa/sa1", "secret-controller")
    ]
    assert (directory / "key.pem").stat().st_mode & 0o777 == 0o600
    svid = X509Svid.from_pem(
        (directory / "cert-chain.pem").read_bytes(), (directory / "key.pem").read_bytes()
    )
    bundle = TrustBundle.parse_pem((directory / "root-cert.pem").read_bytes())
    identity = verify_svid(list(svid.chain), bundle, now=clock.now())
    assert str(identity) == "spiffe://cluster.local/ns/ns1/sa/sa1"
    first_serial = secret.serial_hex
    task = asyncio.create_task(secret.run())
    try:
        await clock.wait_for_sleepers(1)
        clock.advance(timedelta(minutes=20))
        await asyncio.sleep(0)
        assert secret.serial_hex == first_serial  # not yet at half-life
        clock.advance(timedelta(minutes=15))
        await clock.wait_for_sleepers(1)
        assert secret.rotations == 2
        assert secret.serial_hex != first_serial
        rotated = X509Svid.from_pem(
            (directory / "cert-chain.pem").read_bytes(), (directory / "key.pem").read_bytes()
        )
        assert rotated.serial_hex == secret.serial_hex  # key and chain belong together
        assert rotated.private_key.public_key() != svid.private_key.public_key()
    finally:
        task.cancel()


@pytest.mark.parametrize("ttl_minutes", [0, -5], ids=["zero", "negative"])
def test_mounted_secret_refuses_a_nonsense_ttl(tmp_path: Path, ttl_minutes: int) -> None:
    clock = FakeClock()
    material = load_or_create_self_signed(
        tmp_path / "ca",
        trust_domain=TrustDomain("cluster.local"),
        now=clock.now(),
        ttl=timedelta(days=365),
    )
    secret = MountedSecret(
        material,
        tmp_path / "m",
        "ns1",
        "sa1",
        "cluster.local",
        timedelta(minutes=ttl_minutes),
        clock,
    )
    with pytest.raises(PkiError, match="TTL must be positive"):
        secret.issue()
    assert not (tmp_path / "m" / "key.pem").exists()
