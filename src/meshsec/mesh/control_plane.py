"""The mesh's control plane per cluster: token issuers, API servers, CAs, remote secrets, roots.

For every cluster (``kind: Cluster``, or the implicit single ``cluster1``):

* its token issuer — ``meshsec cluster init`` output in ``.meshsec/clusters/<name>`` (the
  service-account signing key, JWKS, the API server's serving CA);
* a remote cluster: its API server stand-in (``meshsec cluster serve``: TokenReview, OIDC,
  JWKS over HTTPS) and, if ``remoteSecret``, the output of ``create-remote-secret`` for it in
  its primary CA's watched ``--remote-secrets`` directory (so that CA can run TokenReviews there);
* a primary: its CA (``meshsec ca serve --cluster <its own cluster dir>``), with ``--cacerts``
  holding an intermediate of the mesh-wide root (``ca.root: shared``, :mod:`meshsec.mesh.trust`)
  or its own self-signed root (``own``), and ``--remote-secrets`` when it has remotes;
* its roots: the bundle of the CA its workloads use, published per namespace (Istio's
  ``istio-ca-root-cert`` ConfigMap, written into the remote clusters too).

Layout under ``.meshsec/``: the single-cluster mesh keeps ``ca/``, ``ca.log``, ``roots/<ns>/``.
With declared clusters: ``cas/<primary>/`` (data dir) + ``cas/<primary>.log``,
``cacerts/<primary>/``, ``mesh-root/``, ``remote-secrets/<primary>/<remote>.yaml``,
``clusters/<name>.apiserver.log``, ``roots/<cluster>/<ns>/root-cert.pem``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from meshsec.cluster import ClusterSigner, init_cluster_dir, load_cluster_signer
from meshsec.cluster.kubeconfig import mint_account_kubeconfig, render_remote_secret
from meshsec.mesh.launch import UpOptions, build_child_env
from meshsec.mesh.manifests import MeshPlan
from meshsec.mesh.processes import ManagedProcess
from meshsec.mesh.topology import ClusterSpec
from meshsec.mesh.trust import ensure_intermediate, ensure_mesh_root
from meshsec.proxy.registry import LOOPBACK
from meshsec.runtime.clock import Clock
from meshsec.runtime.files import KEY_MODE, PUBLIC_MODE, write_atomic

CA_READY_PREFIX = "meshsec ca ready: listening on "
API_READY_MARK = " API server ready: "
READER_TOKEN_TTL = timedelta(days=365)


@dataclass
class ClusterRuntime:
    """One cluster of the running mesh (what state.json's ``clusters[]`` describes)."""

    spec: ClusterSpec
    cluster_dir: Path
    roots_dir: Path
    signer: ClusterSigner | None = None
    api_server: ManagedProcess | None = None
    api_url: str = ""
    api_log: Path | None = None
    # primaries
    ca: ManagedProcess | None = None
    ca_data_dir: Path | None = None
    ca_log: Path | None = None
    cacerts: Path | None = None
    remote_secrets_dir: Path | None = None
    ca_addr: str = ""
    ca_mtls_addr: str = ""
    ca_monitoring: str = ""
    # remotes: the secret file in the primary CA's watched directory (when attached)
    remote_secret: Path | None = None
    # the CA this cluster's workloads use (itself for a primary)
    ca_runtime: ClusterRuntime | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def root_path(self, namespace: str) -> Path:
        return self.roots_dir / namespace / "root-cert.pem"

    @property
    def issuing(self) -> ClusterRuntime:
        assert self.ca_runtime is not None
        return self.ca_runtime

    @property
    def root_bundle(self) -> Path:
        """The root bundle its CA serves (``DATA/root-cert.pem``)."""
        data_dir = self.issuing.ca_data_dir
        assert data_dir is not None
        return data_dir / "root-cert.pem"


class ControlPlane:
    def __init__(
        self,
        plan: MeshPlan,
        state_dir: Path,
        options: UpOptions,
        clock: Clock,
        environ: Mapping[str, str],
        progress: Callable[[str], None],
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self.plan = plan
        self.spawn = spawn
        self.state_dir = state_dir
        self.options = options
        self.clock = clock
        self.environ = environ
        self.progress = progress
        self.clusters: dict[str, ClusterRuntime] = {}
        for spec in plan.clusters:
            self.clusters[spec.name] = self._layout(spec)
        for runtime in self.clusters.values():
            runtime.ca_runtime = self.clusters.get(runtime.spec.ca_cluster)

    def _layout(self, spec: ClusterSpec) -> ClusterRuntime:
        s = self.state_dir
        clusters = s / "clusters"
        if not self.plan.declared_clusters:
            return ClusterRuntime(
                spec, clusters / spec.name, s / "roots", ca_data_dir=s / "ca", ca_log=s / "ca.log"
            )
        out = ClusterRuntime(spec, clusters / spec.name, s / "roots" / spec.name)
        if spec.is_primary:
            out.ca_data_dir = s / "cas" / spec.name
            out.ca_log = s / "cas" / f"{spec.name}.log"
            if spec.ca_root == "shared":
                out.cacerts = s / "cacerts" / spec.name
            if any(c.primary == spec.name for c in self.plan.clusters if not c.is_primary):
                out.remote_secrets_dir = s / "remote-secrets" / spec.name
        else:
            out.api_log = clusters / f"{spec.name}.apiserver.log"
        return out

    @property
    def primaries(self) -> list[ClusterRuntime]:
        return [c for c in self.clusters.values() if c.spec.is_primary]

    @property
    def remotes(self) -> list[ClusterRuntime]:
        return [c for c in self.clusters.values() if not c.spec.is_primary]

    @property
    def first_primary(self) -> ClusterRuntime:
        return self.primaries[0]

    def processes(self) -> list[ManagedProcess]:
        procs = [c.api_server for c in self.remotes] + [c.ca for c in self.primaries]
        return [p for p in procs if p is not None]

    # ------------------------------------------------------------------------------ start
    def init_clusters(self) -> None:
        """``cluster init`` per cluster (kept across runs) and the CA material of primaries."""
        now = self.clock.now()
        for c in self.clusters.values():
            if not (c.cluster_dir / "cluster.yaml").exists():
                init_cluster_dir(c.cluster_dir, name=c.name, now=now)
            c.signer = load_cluster_signer(c.cluster_dir)
        if not self.plan.declared_clusters:  # the single-cluster mesh's lines are unchanged
            c = self.first_primary
            self.progress(f"cluster token issuer [cyan]{c.name}[/] ({c.cluster_dir})")
        else:
            names = ", ".join(f"[cyan]{c.name}[/] ({c.spec.role})" for c in self.clusters.values())
            self.progress(f"cluster token issuer(s): {names} in {self.state_dir / 'clusters'}")
        shared = [c for c in self.primaries if c.cacerts is not None]
        if shared:
            root = ensure_mesh_root(
                self.state_dir / "mesh-root", trust_domain=self.options.trust_domain, now=now
            )
            for c in shared:
                assert c.cacerts is not None
                ensure_intermediate(
                    c.cacerts, root, cluster=c.name, trust_domain=self.options.trust_domain, now=now
                )
            self.progress(
                f"mesh root {self.state_dir / 'mesh-root'}; intermediate per primary: "
                + ", ".join(f"{c.name} ({c.cacerts})" for c in shared)
            )

    async def start_api_servers(self) -> None:
        """``meshsec cluster serve`` for every remote cluster (its TokenReview endpoint)."""
        remotes = self.remotes
        for c in remotes:
            assert c.api_log is not None
            c.api_server = ManagedProcess(
                f"API server of {c.name}",
                self._meshsec(
                    "cluster",
                    "serve",
                    str(c.cluster_dir),
                    "--listen",
                    f"{LOOPBACK}:0",
                    "--log-level",
                    self.options.log_level,
                ),
                c.api_log,
                build_child_env(self.environ, {}),
                capture_stdout=True,
            )
            await c.api_server.start()
        lines = await asyncio.gather(
            *(
                c.api_server.wait_for_line("cluster ", within=self.options.ready_timeout)
                for c in remotes
                if c.api_server
            )
        )
        for c, line in zip(remotes, lines, strict=True):
            c.api_url = (
                line.partition(API_READY_MARK)[2].split()[0] if API_READY_MARK in line else ""
            )
            if not c.api_url.startswith("https://"):
                assert c.api_server is not None
                raise c.api_server.failure(f"unexpected ready line: {line[:200]}")
            assert c.api_server is not None
            self.spawn(c.api_server.forward_stdout())
        if remotes:
            self.progress(
                "API server(s) of remote cluster(s): "
                + ", ".join(f"[cyan]{c.name}[/] {c.api_url}" for c in remotes)
            )

    def write_remote_secrets(self) -> None:
        """``create-remote-secret`` for each attached remote, into its primary's watched dir."""
        for c in self.primaries:  # the manifests decide: nothing left from an earlier run
            if c.remote_secrets_dir is not None:
                c.remote_secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                for stale in c.remote_secrets_dir.iterdir():
                    if stale.is_file():
                        stale.unlink()
        for c in self.remotes:
            if c.spec.remote_secret:
                c.remote_secret = self.write_remote_secret(c)
        attached = [c for c in self.remotes if c.remote_secret is not None]
        detached = [c.name for c in self.remotes if c.remote_secret is None]
        if attached or detached:
            self.progress(
                "remote secret(s): "
                + ", ".join(f"{c.name} → {c.issuing.name}'s CA" for c in attached)
                + (f"; not attached (no remote secret): {', '.join(detached)}" if detached else "")
            )

    def write_remote_secret(self, c: ClusterRuntime) -> Path:
        """The Secret ``meshsec create-remote-secret --cluster DIR --name <c>`` prints, written
        0600 atomically as ``<primary's --remote-secrets>/<c>.yaml``."""
        assert c.signer is not None
        directory = c.issuing.remote_secrets_dir
        assert directory is not None
        kubeconfig = mint_account_kubeconfig(
            c.signer, c.name, server=c.api_url, now=self.clock.now(), ttl=READER_TOKEN_TTL
        )
        path = directory / f"{c.name}.yaml"
        write_atomic(path, render_remote_secret(c.name, kubeconfig).encode(), KEY_MODE)
        return path

    async def start_cas(self, monitoring_ports: Mapping[str, int]) -> None:
        primaries = self.primaries
        for c in primaries:
            c.ca_monitoring = f"{LOOPBACK}:{monitoring_ports[c.name]}"
            c.ca = ManagedProcess(
                "CA" if not self.plan.declared_clusters else f"CA of {c.name}",
                self._ca_argv(c),
                c.ca_log or self.state_dir / "ca.log",
                build_child_env(self.environ, {"MESHSEC_LOG_LEVEL": self.options.log_level}),
                capture_stdout=True,
            )
            await c.ca.start()
        lines = await asyncio.gather(
            *(
                c.ca.wait_for_line(CA_READY_PREFIX, within=self.options.ready_timeout)
                for c in primaries
                if c.ca
            )
        )
        for c, line in zip(primaries, lines, strict=True):
            words = line.split()
            c.ca_addr = words[0]
            if "mtls" in words:
                c.ca_mtls_addr = words[words.index("mtls") + 1]
            assert c.ca is not None
            self.spawn(c.ca.forward_stdout())
            if not self.plan.declared_clusters:
                self.progress(f"CA ready on [cyan]{c.ca_addr}[/] (TLS), data in {c.ca_data_dir}")
                continue
            mode = "plug-in CA (shared root)" if c.cacerts else "self-signed root"
            self.progress(
                f"CA of [cyan]{c.name}[/] ready on {c.ca_addr} (TLS, {mode}), "
                f"data in {c.ca_data_dir}"
            )

    def _ca_argv(self, c: ClusterRuntime) -> list[str]:
        assert c.ca_data_dir is not None
        argv = self._meshsec(
            "ca",
            "serve",
            "--data-dir",
            str(c.ca_data_dir),
            "--cluster",
            str(c.cluster_dir),
            "--listen",
            f"{LOOPBACK}:0",
            "--mtls-listen",
            f"{LOOPBACK}:0",
            "--monitoring",
            c.ca_monitoring,
            "--trust-domain",
            self.options.trust_domain,
            "--workers",
            str(self.options.ca_workers),
        )
        if c.cacerts is not None:
            argv += ["--cacerts", str(c.cacerts)]
        if c.remote_secrets_dir is not None:
            argv += ["--remote-secrets", str(c.remote_secrets_dir)]
        return argv

    def publish_roots(self, namespaces: Sequence[str]) -> None:
        """Each cluster's CA root bundle into every namespace of that cluster."""
        for c in self.clusters.values():
            root = c.root_bundle.read_bytes()
            for ns in namespaces:
                path = c.root_path(ns)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, root, PUBLIC_MODE)
        if self.plan.declared_clusters:
            where = f"{len(namespaces)} namespace(s) of each cluster"
            path = self.state_dir / "roots" / "<cluster>" / "<ns>"
        else:
            where, path = f"{len(namespaces)} namespace(s)", self.state_dir / "roots" / "<ns>"
        self.progress(f"root published to {where} ({path}/root-cert.pem)")

    def _meshsec(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "meshsec", *args]

    # ------------------------------------------------------------------------------ stop
    async def stop(self) -> None:
        for c in self.primaries:
            if c.ca is not None:
                await c.ca.stop()
        await asyncio.gather(
            *(c.api_server.stop() for c in self.remotes if c.api_server is not None),
            return_exceptions=True,
        )


__all__ = ["CA_READY_PREFIX", "ClusterRuntime", "ControlPlane"]
