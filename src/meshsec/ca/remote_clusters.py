"""Remote clusters from a directory of remote secrets (istiod's secret controller, for the CA).

``meshsec ca serve --remote-secrets DIR`` polls DIR (every ``remote_secrets_poll``, on the CA's
:class:`~meshsec.runtime.clock.Clock`). Each regular file not starting with ``.`` is one remote
secret (``istioctl create-remote-secret`` / ``meshsec create-remote-secret`` output). On every
poll:

* a new or changed file is parsed whole (:func:`~meshsec.ca.remote_secret.parse_remote_secret`);
  a malformed one is logged, counted (``remote_cluster_secret_events_total{event="invalid"}``)
  and ignored — if an earlier version of that file was good, its clusters stay registered;
* Istio's registration rules apply across files (local cluster id ignored with a warning,
  cluster ids unique across secrets; :func:`~meshsec.ca.remote_secret.compose_remote_clusters`);
* each registered cluster gets a :class:`~meshsec.ca.tokenreview.TokenReviewVerifier` built with
  the official ``kubernetes`` client from its kubeconfig; a removed file's clusters are dropped
  in the same poll, so their workloads are refused from then on.

The registry is the :class:`~meshsec.ca.authn.ClusterLookup` of the ``KubeJwtAuthenticator``.
A TokenReview that cannot reach the remote API server fails closed (the caller gets
UNAUTHENTICATED) and is logged with the cluster id and counted
(``meshsec_ca_tokenreview_unavailable_count``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from meshsec.ca.authn import ServiceAccount, TokenVerifier
from meshsec.ca.metrics import MANAGED_CLUSTERS, SECRET_EVENTS, TOKENREVIEW_UNAVAILABLE, CaCounters
from meshsec.ca.remote_secret import (
    RemoteKubeconfig,
    RemoteSecret,
    RemoteSecretError,
    compose_remote_clusters,
    parse_remote_secret,
)
from meshsec.ca.tokenreview import TokenReviewUnavailable, TokenReviewVerifier
from meshsec.runtime.clock import Clock

log = logging.getLogger(__name__)

_SKIPPED_SUFFIXES = ("~", ".tmp", ".swp", ".bak")


class UnusableKubeconfig(Exception):
    pass


def build_tokenreview_verifier(
    kubeconfig: RemoteKubeconfig, *, audiences: Sequence[str], timeout: float
) -> tuple[TokenVerifier, Any]:
    """A TokenReview verifier through the official client (and its ApiClient, to close)."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.config.config_exception import ConfigException

    configuration = k8s_client.Configuration()
    configuration.retries = 1  # fail closed quickly when the API server is down
    try:
        api = k8s_config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
            dict(kubeconfig.config), persist_config=False, client_configuration=configuration
        )
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise UnusableKubeconfig(str(exc)) from None
    return TokenReviewVerifier(api, audiences=audiences, timeout=timeout), api


VerifierFactory = Callable[[RemoteKubeconfig], tuple[TokenVerifier, Any]]


class _ReportingVerifier:
    """Names the cluster in failures and counts unreachable API servers."""

    def __init__(self, cluster: str, inner: TokenVerifier, counters: CaCounters | None) -> None:
        self._cluster = cluster
        self._inner = inner
        self._counters = counters

    async def verify_token(self, token: str, *, now: datetime) -> ServiceAccount:
        try:
            return await self._inner.verify_token(token, now=now)
        except TokenReviewUnavailable as exc:
            if self._counters is not None:
                self._counters.inc(TOKENREVIEW_UNAVAILABLE)
            log.error(
                "remote cluster %s: API server unavailable, refusing the caller (fail closed): %s",
                self._cluster,
                exc,
            )
            raise TokenReviewUnavailable(f"remote cluster {self._cluster!r}: {exc}") from None


@dataclass
class _Active:
    source: str
    sha256: str
    verifier: TokenVerifier
    api_client: Any


@dataclass
class _FileState:
    stamp: tuple[int, int, int]  # (inode, size, mtime_ns)
    digest: str
    good: RemoteSecret | None  # the last version that parsed
    error: str | None  # the current version's problem, if any


class RemoteClusters:
    """Remote clusters registered from remote secrets in ``directory`` (a ClusterLookup)."""

    def __init__(
        self,
        directory: Path,
        *,
        local_cluster: str,
        reserved: frozenset[str] = frozenset(),
        audiences: Sequence[str] = ("istio-ca",),
        review_timeout: float = 5.0,
        counters: CaCounters | None = None,
        report: bool = True,
        local_clusters: int = 1,
        factory: VerifierFactory | None = None,
    ) -> None:
        self.directory = directory
        self._local = local_cluster
        self._reserved = reserved
        self._counters = counters
        self._report = report
        self._local_clusters = local_clusters
        self._factory: VerifierFactory = factory or (
            lambda kc: build_tokenreview_verifier(kc, audiences=audiences, timeout=review_timeout)
        )
        self._files: dict[str, _FileState] = {}
        self._active: dict[str, _Active] = {}
        self._refused: dict[str, str] = {}
        self._warned: set[str] = set()
        self._unreadable: set[str] = set()
        self._failures: dict[str, str] = {}  # kubeconfig sha256 -> why no client could be built
        self._missing_reported = False
        if counters is not None and report:
            counters.set(f"{MANAGED_CLUSTERS}:local", local_clusters)

    # ------------------------------------------------------------ ClusterLookup

    def get(self, cluster_id: str) -> TokenVerifier | None:
        active = self._active.get(cluster_id)
        return active.verifier if active is not None else None

    def cluster_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._active))

    def sources(self) -> dict[str, str]:
        """cluster id -> the file that registered it."""
        return {cid: a.source for cid, a in sorted(self._active.items())}

    # ------------------------------------------------------------ reporting

    def _event(self, event: str) -> None:
        if self._counters is not None and self._report:
            self._counters.inc(f"{SECRET_EVENTS}:{event}")

    def _log(self, level: int, message: str, *args: object) -> None:
        log.log(level if self._report else logging.DEBUG, message, *args)

    # ------------------------------------------------------------ polling

    async def run(self, clock: Clock, interval: float) -> None:
        """Poll forever (cancel to stop)."""
        while True:
            await clock.sleep(interval)
            try:
                # Building kubernetes clients takes a while: keep the event loop serving.
                await asyncio.to_thread(self.sync)
            except Exception:  # a poll must never kill the CA; the next one retries
                log.exception("remote secrets: poll of %s failed", self.directory)

    def _scan(self) -> dict[str, Path]:
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:
            if not self._missing_reported:
                self._log(
                    logging.WARNING, "remote secrets directory %s does not exist", self.directory
                )
                self._missing_reported = True
            return {}
        except OSError as exc:
            self._log(logging.ERROR, "remote secrets directory %s: %s", self.directory, exc)
            return {}
        self._missing_reported = False
        found: dict[str, Path] = {}
        for path in entries:
            name = path.name
            if name.startswith(".") or name.endswith(_SKIPPED_SUFFIXES) or not path.is_file():
                continue
            found[name] = path
        return found

    def _read(self, name: str, path: Path) -> None:
        try:
            st = path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            previous = self._files.get(name)
            if previous is not None and previous.stamp == stamp:
                return
            raw = path.read_bytes()
        except OSError as exc:
            if name not in self._unreadable:  # once until it becomes readable
                self._log(logging.WARNING, "remote secret %s: cannot read: %s", path, exc)
            self._unreadable.add(name)
            return
        self._unreadable.discard(name)
        digest = hashlib.sha256(raw).hexdigest()
        if previous is not None and previous.digest == digest:
            previous.stamp = stamp
            return
        good = previous.good if previous is not None else None
        try:
            secret = parse_remote_secret(raw.decode("utf-8"), source=name)
        except (RemoteSecretError, UnicodeDecodeError) as exc:
            reason = exc.reason if isinstance(exc, RemoteSecretError) else "not UTF-8 text"
            self._event("invalid")
            kept = " (its previous version stays in effect)" if good is not None else ""
            self._log(logging.ERROR, "remote secret %s ignored: %s%s", path, reason, kept)
            self._files[name] = _FileState(stamp, digest, good, reason)
            return
        self._event("update" if previous is not None else "add")
        self._log(
            logging.INFO,
            "remote secret %s (%s/%s): clusters %s",
            path,
            secret.namespace or "-",
            secret.name,
            [c.cluster_id for c in secret.clusters],
        )
        self._files[name] = _FileState(stamp, digest, secret, None)

    def sync(self) -> None:
        """One poll: read changes, apply the registration rules, (re)build and drop clients."""
        found = self._scan()
        for name in [n for n in self._files if n not in found]:
            del self._files[name]
            self._event("delete")
            self._log(logging.INFO, "remote secret %s removed", self.directory / name)
        for name, path in sorted(found.items()):
            self._read(name, path)
        secrets = [s.good for s in self._files.values() if s.good is not None]
        registration = compose_remote_clusters(
            secrets,
            local_cluster=self._local,
            reserved=self._reserved,
            previous_owner={cid: a.source for cid, a in self._active.items()},
        )
        for warning in registration.warnings:
            if warning not in self._warned:  # once, not on every poll
                self._log(logging.WARNING, "%s", warning)
        self._warned = set(registration.warnings)
        refused = dict(registration.refused)
        wanted = registration.clusters
        # Build every new or changed client first, per secret: a secret is applied whole.
        built: dict[str, _Active] = {}
        by_source: dict[str, list[tuple[str, RemoteKubeconfig]]] = {}
        for cid, (source, kubeconfig) in wanted.items():
            current = self._active.get(cid)
            if current is None or current.sha256 != kubeconfig.sha256 or current.source != source:
                by_source.setdefault(source, []).append((cid, kubeconfig))
        for source, items in by_source.items():
            fresh: dict[str, _Active] = {}
            failure = next(
                (self._failures[k.sha256] for _, k in items if k.sha256 in self._failures), None
            )
            for cid, kubeconfig in items if failure is None else ():
                try:
                    verifier, api = self._factory(kubeconfig)
                except UnusableKubeconfig as exc:
                    failure = f"cluster {cid!r}: create remote cluster failed: {exc}"
                    self._failures[kubeconfig.sha256] = failure
                    break
                fresh[cid] = _Active(
                    source,
                    kubeconfig.sha256,
                    _ReportingVerifier(cid, verifier, self._counters),
                    api,
                )
            if failure is not None:
                for active in fresh.values():
                    _close(active.api_client)
                refused[source] = failure
                continue
            built.update(fresh)
        for source, reason in refused.items():
            if self._refused.get(source) != reason:
                self._event("invalid")
                self._log(
                    logging.ERROR, "remote secret %s refused: %s", self.directory / source, reason
                )
        self._refused = refused
        # Apply. A refused secret's clusters keep their previous registration (if any).
        keep = {
            cid: a
            for cid, a in self._active.items()
            if cid not in built
            and (
                (cid in wanted and wanted[cid][0] == a.source)
                or (a.source in refused and a.source in self._files)
            )
        }
        for cid, active in self._active.items():
            if cid in built:
                self._log(
                    logging.INFO, "remote cluster %s updated (secret %s)", cid, built[cid].source
                )
                _close(active.api_client)
            elif cid not in keep:
                self._log(logging.INFO, "remote cluster %s removed (secret %s)", cid, active.source)
                _close(active.api_client)
        for cid, active in built.items():
            if cid not in self._active:
                self._log(
                    logging.INFO, "remote cluster %s registered from secret %s", cid, active.source
                )
        self._active = {**keep, **built}
        if len(self._failures) > 1024:
            self._failures.clear()
        if self._counters is not None and self._report:
            self._counters.set(f"{MANAGED_CLUSTERS}:remote", len(self._active))

    def close(self) -> None:
        for active in self._active.values():
            _close(active.api_client)
        self._active = {}


def _close(api_client: Any) -> None:
    close = getattr(api_client, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()
