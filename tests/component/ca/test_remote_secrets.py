"""The CA with remote secrets, against two real local cluster API servers on loopback.

cluster1 is the CA's own cluster (``--kubeconfig``, TokenReview on cluster1's API server);
cluster2 is a remote cluster that becomes known only through a remote secret in the watched
directory, exactly as ``istioctl create-remote-secret | kubectl apply`` makes it known to istiod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from meshsec.ca.assembly import (
    build_authenticators,
    build_remote_clusters,
    build_token_verifiers,
    load_material,
)
from meshsec.ca.metrics import CaCounters
from meshsec.ca.remote_clusters import RemoteClusters
from meshsec.cluster import ClusterSigner, init_cluster_dir
from meshsec.cluster.apiserver import ClusterApiServer
from meshsec.cluster.kubeconfig import mint_account_kubeconfig, render_remote_secret, render_yaml
from tests.component.ca.support import (
    CaUnderTest,
    call,
    make_settings,
    new_csr,
    start_ca,
    token_for,
)
from tests.fakes.clock import FakeClock


@dataclass(frozen=True)
class Cluster:
    signer: ClusterSigner
    api: ClusterApiServer

    @property
    def name(self) -> str:
        return self.signer.trust.name


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    base = tmp_path_factory.mktemp("mc")
    now = datetime.now(UTC)
    made = []
    for name in ("cluster1", "cluster2"):
        signer = init_cluster_dir(base / name, name=name, now=now, algorithm="ES256")
        made.append(Cluster(signer, ClusterApiServer(signer.trust.directory).start()))
    try:
        yield made[0], made[1]
    finally:
        for cluster in made:
            cluster.api.stop()


def remote_secret(cluster: Cluster, *, name: str | None = None, server: str | None = None) -> str:
    config = mint_account_kubeconfig(
        cluster.signer,
        name or cluster.name,
        server=server or cluster.api.url,
        now=datetime.now(UTC),
    )
    return render_remote_secret(name or cluster.name, config)


@dataclass
class Mesh:
    ca: CaUnderTest
    remote: RemoteClusters
    counters: CaCounters
    secrets: Path
    cluster1: Cluster
    cluster2: Cluster

    def add(self, filename: str, text: str) -> None:
        (self.secrets / filename).write_text(text)
        self.remote.sync()

    def remove(self, filename: str) -> None:
        (self.secrets / filename).unlink()
        self.remote.sync()

    async def fetch(self, cluster: Cluster, cluster_id: str | None) -> grpc.StatusCode:
        token = token_for(cluster.signer, "bookinfo", "reviews")
        result = await call(self.ca, new_csr()[1], token=token, cluster_id=cluster_id)
        return result.code


@pytest.fixture
async def mesh(tmp_path: Path, clusters: tuple[Cluster, Cluster]) -> AsyncIterator[Mesh]:
    cluster1, cluster2 = clusters
    kubeconfig = tmp_path / "cluster1.kubeconfig"
    local = mint_account_kubeconfig(
        cluster1.signer,
        "cluster1",
        server=cluster1.api.url,
        now=datetime.now(UTC),
        account="istio-system/istiod",
    )
    kubeconfig.write_text(render_yaml(local))
    secrets = tmp_path / "remote-secrets"
    secrets.mkdir()
    settings = replace(
        make_settings(tmp_path / "data", []),
        kubeconfig=kubeconfig,
        cluster_id="cluster1",
        remote_secrets=secrets,
        cluster_aliases=("legacy-east=cluster2",),
    )
    settings.data_dir.mkdir(parents=True)
    material = load_material(settings, now=datetime.now(UTC))
    verifiers, local_id = build_token_verifiers(settings)
    counters = CaCounters()
    remote = build_remote_clusters(settings, verifiers, local_id, counters=counters)
    assert remote is not None
    ca = await start_ca(
        settings,
        authenticators=build_authenticators(settings, material, verifiers, local_id, remote),
    )
    try:
        yield Mesh(ca, remote, counters, secrets, cluster1, cluster2)
    finally:
        await ca.running.stop(grace=0)
        remote.close()


def events(mesh: Mesh) -> dict[str, int]:
    names = ("add", "update", "delete", "invalid")
    return {n: mesh.counters.value(f"remote_cluster_secret_events_total:{n}") for n in names}


async def test_remote_workload_gets_a_certificate_only_while_the_secret_exists(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    c2 = mesh.cluster2
    token = token_for(c2.signer, "bookinfo", "reviews")
    before = await call(mesh.ca, new_csr()[1], token=token, cluster_id="cluster2")
    assert before.code is grpc.StatusCode.UNAUTHENTICATED
    assert (
        'client claims to be in cluster "cluster2", but we only know about local cluster '
        '"cluster1" and remote clusters []' in caplog.text
    )

    mesh.add("cluster2.yaml", remote_secret(c2))
    assert mesh.remote.cluster_ids() == ("cluster2",)
    reviews = c2.api.reviews
    result = await call(mesh.ca, new_csr()[1], token=token, cluster_id="cluster2")
    assert result.code is grpc.StatusCode.OK, result.details
    assert c2.api.reviews == reviews + 1  # the TokenReview ran on cluster2's API server
    san = result.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [u.value for u in san] == ["spiffe://cluster.local/ns/bookinfo/sa/reviews"]
    [record] = mesh.ca.issued()
    assert (record.cluster, record.authenticator) == ("cluster2", "KubeJWTAuthenticator")
    assert mesh.counters.value("istiod_managed_clusters:remote") == 1
    assert mesh.counters.value("istiod_managed_clusters:local") == 1

    mesh.remove("cluster2.yaml")
    after = await call(mesh.ca, new_csr()[1], token=token, cluster_id="cluster2")
    assert after.code is grpc.StatusCode.UNAUTHENTICATED
    assert after.details.startswith("request authenticate failure")
    assert events(mesh) == {"add": 1, "update": 0, "delete": 1, "invalid": 0}
    assert mesh.counters.value("istiod_managed_clusters:remote") == 0


async def test_local_cluster_tokens_are_reviewed_by_the_local_api(mesh: Mesh) -> None:
    assert await mesh.fetch(mesh.cluster1, None) is grpc.StatusCode.OK
    assert await mesh.fetch(mesh.cluster1, "cluster1") is grpc.StatusCode.OK


async def test_a_token_presented_as_another_cluster_is_refused(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    mesh.add("cluster2.yaml", remote_secret(mesh.cluster2))
    assert await mesh.fetch(mesh.cluster2, "cluster1") is grpc.StatusCode.UNAUTHENTICATED
    assert await mesh.fetch(mesh.cluster2, None) is grpc.StatusCode.UNAUTHENTICATED
    assert await mesh.fetch(mesh.cluster1, "cluster2") is grpc.StatusCode.UNAUTHENTICATED
    assert "the service account authentication returns an error: invalid bearer token" in (
        caplog.text
    )
    assert mesh.ca.issued() == []
    # The real cluster id (or its alias) works.
    assert await mesh.fetch(mesh.cluster2, "cluster2") is grpc.StatusCode.OK
    assert await mesh.fetch(mesh.cluster2, "legacy-east") is grpc.StatusCode.OK


async def test_unknown_cluster_is_refused(mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    mesh.add("cluster2.yaml", remote_secret(mesh.cluster2))
    token = token_for(mesh.cluster2.signer)
    result = await call(mesh.ca, new_csr()[1], token=token, cluster_id="cluster9")
    assert result.code is grpc.StatusCode.UNAUTHENTICATED
    assert "remote clusters [cluster2]" in caplog.text


async def test_remote_api_down_fails_closed(
    mesh: Mesh, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = ClusterApiServer(mesh.cluster2.signer.trust.directory, write_url_file=False).start()
    url = down.url
    down.stop()  # nothing listens there any more
    mesh.add("cluster2.yaml", remote_secret(mesh.cluster2, server=url))
    assert mesh.remote.cluster_ids() == ("cluster2",)
    started = asyncio.get_running_loop().time()
    assert await mesh.fetch(mesh.cluster2, "cluster2") is grpc.StatusCode.UNAUTHENTICATED
    assert asyncio.get_running_loop().time() - started < 5
    assert "remote cluster cluster2: API server unavailable, refusing the caller" in caplog.text
    assert mesh.counters.value("meshsec_ca_tokenreview_unavailable_count") == 1
    assert mesh.ca.issued() == []


async def test_reader_without_tokenreview_rights_is_refused(mesh: Mesh) -> None:
    config = mint_account_kubeconfig(
        mesh.cluster2.signer,
        "cluster2",
        server=mesh.cluster2.api.url,
        now=datetime.now(UTC),
        account="default/sleep",
    )
    mesh.add("cluster2.yaml", render_remote_secret("cluster2", config))
    assert await mesh.fetch(mesh.cluster2, "cluster2") is grpc.StatusCode.UNAUTHENTICATED


async def test_malformed_secret_is_ignored_and_reported(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    mesh.add("broken.yaml", "apiVersion: v1\nkind: Secret\nmetadata: [\n")
    assert mesh.remote.cluster_ids() == ()
    assert events(mesh)["invalid"] == 1
    assert "remote secret" in caplog.text
    assert "broken.yaml ignored: not valid YAML" in caplog.text
    mesh.remote.sync()  # unchanged: not reported again
    assert events(mesh)["invalid"] == 1
    # A good secret, then a bad edit of it: the good version stays in effect.
    mesh.add("cluster2.yaml", remote_secret(mesh.cluster2))
    good = remote_secret(mesh.cluster2)
    mesh.add("cluster2.yaml", good.replace("https://", "http://"))
    assert "its previous version stays in effect" in caplog.text
    assert await mesh.fetch(mesh.cluster2, "cluster2") is grpc.StatusCode.OK
    assert events(mesh)["invalid"] == 2


async def test_duplicate_cluster_ids_and_the_local_key(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    mesh.add("a.yaml", remote_secret(mesh.cluster2))
    mesh.add("b.yaml", remote_secret(mesh.cluster2))
    assert mesh.remote.sources() == {"cluster2": "a.yaml"}
    assert (
        "b.yaml refused: cluster 'cluster2' has already been registered by remote secret a.yaml"
        in (caplog.text)
    )
    mesh.remove("a.yaml")  # b.yaml takes over on the same poll
    assert mesh.remote.sources() == {"cluster2": "b.yaml"}
    assert await mesh.fetch(mesh.cluster2, "cluster2") is grpc.StatusCode.OK
    mesh.add("local.yaml", remote_secret(mesh.cluster1))
    warning = "ignoring cluster 'cluster1' as it would overwrite the config cluster"
    assert warning in caplog.text
    assert mesh.remote.sources() == {"cluster2": "b.yaml"}
    mesh.remote.sync()
    mesh.remote.sync()
    assert caplog.text.count(warning) == 1  # reported once, not on every poll


async def test_directory_is_polled_on_the_clock(mesh: Mesh) -> None:
    clock = FakeClock()
    task = asyncio.create_task(mesh.remote.run(clock, 1.0))
    try:
        await clock.wait_for_sleepers(1)
        (mesh.secrets / "cluster2.yaml").write_text(remote_secret(mesh.cluster2))
        assert mesh.remote.cluster_ids() == ()
        clock.advance(1.0)
        await clock.wait_for_sleepers(1)
        assert mesh.remote.cluster_ids() == ("cluster2",)
        (mesh.secrets / "cluster2.yaml").unlink()
        clock.advance(1.0)
        await clock.wait_for_sleepers(1)
        assert mesh.remote.cluster_ids() == ()
    finally:
        task.cancel()


def test_settings_from_env_and_bad_aliases(tmp_path: Path) -> None:
    from meshsec.config.ca import CaSettings
    from meshsec.config.errors import ConfigError
    from meshsec.config.load import load_settings

    env = {
        "MESHSEC_CA_DATA_DIR": str(tmp_path),
        "MESHSEC_CA_REMOTE_SECRETS": str(tmp_path / "secrets"),
        "MESHSEC_CA_REMOTE_SECRETS_POLL": "250ms",
        "MESHSEC_CA_CLUSTER_ALIASES": "old=cluster2, east=cluster3",
    }
    settings = load_settings(CaSettings, env=env)
    assert settings.remote_secrets == tmp_path / "secrets"
    assert settings.remote_secrets_poll.total_seconds() == 0.25
    assert settings.alias_map == {"old": "cluster2", "east": "cluster3"}
    with pytest.raises(ConfigError, match="must be ALIAS=CLUSTER"):
        load_settings(CaSettings, env={**env, "MESHSEC_CA_CLUSTER_ALIASES": "nonsense"})
