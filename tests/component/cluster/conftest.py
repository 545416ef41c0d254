"""A local cluster (ES256 for speed) and its API server on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meshsec.cluster import ClusterSigner, init_cluster_dir
from meshsec.cluster.apiserver import ClusterApiServer


@pytest.fixture(scope="module")
def cluster2(tmp_path_factory: pytest.TempPathFactory) -> ClusterSigner:
    base = tmp_path_factory.mktemp("cluster2")
    return init_cluster_dir(base / "c2", name="cluster2", now=datetime.now(UTC), algorithm="ES256")


@pytest.fixture(scope="module")
def other_cluster(tmp_path_factory: pytest.TempPathFactory) -> ClusterSigner:
    base = tmp_path_factory.mktemp("other")
    return init_cluster_dir(base / "c3", name="cluster3", now=datetime.now(UTC), algorithm="ES256")


@pytest.fixture(scope="module")
def apiserver(cluster2: ClusterSigner) -> Iterator[ClusterApiServer]:
    server = ClusterApiServer(cluster2.trust.directory).start()
    try:
        yield server
    finally:
        server.stop()


def cluster_dir(signer: ClusterSigner) -> Path:
    return signer.trust.directory
