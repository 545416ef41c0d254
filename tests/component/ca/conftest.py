"""Fixtures for the CA component tests: three local clusters (two trusted) and a running CA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meshsec.cluster import ClusterSigner, init_cluster_dir
from tests.component.ca.support import CaUnderTest, make_settings, start_ca


@dataclass(frozen=True)
class Clusters:
    cluster1: ClusterSigner  # local (first --cluster), RS256
    cluster2: ClusterSigner  # remote, ES256
    rogue: ClusterSigner  # not trusted by the CA

    @property
    def trusted_dirs(self) -> tuple[Path, Path]:
        return (self.cluster1.trust.directory, self.cluster2.trust.directory)


@pytest.fixture(scope="session")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Clusters:
    base = tmp_path_factory.mktemp("clusters")
    now = datetime.now(UTC)
    return Clusters(
        init_cluster_dir(base / "c1", name="cluster1", now=now, algorithm="RS256"),
        init_cluster_dir(base / "c2", name="cluster2", now=now, algorithm="ES256"),
        init_cluster_dir(base / "rogue", name="rogue", now=now, algorithm="ES256"),
    )


@pytest.fixture
async def ca(tmp_path: Path, clusters: Clusters) -> AsyncIterator[CaUnderTest]:
    running = await start_ca(make_settings(tmp_path / "data", clusters.trusted_dirs))
    try:
        yield running
    finally:
        await running.running.stop(grace=0)
