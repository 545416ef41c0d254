"""`meshsec cluster init`: the private keys it writes are 0600 whatever the umask."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshsec.cli.main import main


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_cluster_init_writes_private_keys_0600(tmp_path: Path) -> None:
    directory = tmp_path / "c1"
    assert main(["cluster", "init", str(directory), "--name", "c1"]) == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}
    assert modes["sa-signer.key"] == 0o600  # the token signing key
    assert modes["ca.key"] == 0o600  # the API server's serving CA key
    assert modes["jwks.json"] == 0o644
    assert modes["cluster.yaml"] == 0o644
    assert not [name for name in modes if name.endswith(".tmp")]
