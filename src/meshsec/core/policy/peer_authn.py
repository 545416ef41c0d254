"""Effective inbound mTLS for a workload: Istio's PeerAuthentication composition (§5.1).

Rules, exactly as Istio applies them:

1. Candidates are the PeerAuthentications in the workload's namespace and in the root namespace
   (``MeshConfig.root_namespace``, default ``istio-system``).
2. A policy without a selector (or with empty ``matchLabels``) is *mesh-level* in the root
   namespace and *namespace-level* elsewhere. For each namespace only the **oldest** selector-less
   policy counts; newer ones are ignored (and reported as such).
3. A policy with a selector is *workload-level* when its ``matchLabels`` are a subset of the
   workload's labels — except in the root namespace, where selector policies are **ignored**.
4. Within a level the oldest ``creationTimestamp`` wins; equal (or missing) timestamps fall back
   to input order (:attr:`~meshsec.core.policy.model.PeerAuthentication.precedence_key`).
5. Start from PERMISSIVE, then apply mesh, namespace, workload in that order; a level whose mode
   is UNSET (or whose ``mtls`` is absent) inherits what came before.
6. Port-level modes come only from the chosen workload-level policy; an UNSET port entry
   inherits the resolved workload mode.

The client side uses :meth:`PeerAuthenticationIndex.namespace_mode` (Istio's
``GetNamespaceMutualTLSMode``) for auto mTLS; it never looks at workload-level policies.

Build a :class:`PeerAuthenticationIndex` once per snapshot and call :meth:`compose` per workload;
:func:`compose_peer_authentication` is the one-shot convenience.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from meshsec.core.policy.model import FrozenMap, MeshConfig, MtlsMode, PeerAuthentication

DEFAULT_MODE = MtlsMode.PERMISSIVE


class Level(Enum):
    """Which level decided a mode: a policy level, a port entry, or nothing (the default)."""

    DEFAULT = "default"
    MESH = "mesh"
    NAMESPACE = "namespace"
    WORKLOAD = "workload"
    PORT = "port"


class NamespaceMtlsMode(Enum):
    """The namespace-level mode a client infers for auto mTLS (Istio's ``MutualTLSMode``)."""

    UNKNOWN = "UNKNOWN"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


@dataclass(frozen=True)
class IgnoredPolicy:
    """A PeerAuthentication that looks relevant but Istio ignores, and why."""

    policy: PeerAuthentication
    reason: str


@dataclass(frozen=True)
class LevelDecision:
    """What one level contributed: its chosen policy, its own mode and the mode after it."""

    level: Level
    policy: PeerAuthentication
    own_mode: MtlsMode
    resolved: MtlsMode
    reason: str


@dataclass(frozen=True)
class PortDecision:
    """The mode of one workload port and where it came from."""

    port: int
    mode: MtlsMode
    level: Level
    policy: PeerAuthentication | None
    reason: str


@dataclass(frozen=True)
class EffectiveMtls:
    """The composed inbound mTLS settings of one workload.

    ``mode`` is never UNSET. ``port_modes`` has every port with a port-level entry in the chosen
    workload policy (UNSET entries resolved to ``mode``). ``levels`` lists the mesh, namespace
    and workload decisions that were made (in the order applied). ``applied`` lists the policies
    that apply in precedence order (workload-level, oldest first; then namespace; then mesh);
    ``ignored`` those that Istio drops (newer selector-less duplicates, selectors in the root
    namespace).
    """

    namespace: str
    labels: FrozenMap[str, str]
    mode: MtlsMode
    decided_by: Level
    deciding_policy: PeerAuthentication | None
    port_modes: FrozenMap[int, MtlsMode]
    levels: tuple[LevelDecision, ...]
    applied: tuple[PeerAuthentication, ...]
    ignored: tuple[IgnoredPolicy, ...] = ()
    overridden: tuple[PeerAuthentication, ...] = field(default=())

    @property
    def reason(self) -> str:
        if self.deciding_policy is None:
            return f"no PeerAuthentication sets a mode; default {DEFAULT_MODE.value}"
        return next(d.reason for d in self.levels if d.policy is self.deciding_policy)

    def policy_at(self, level: Level) -> PeerAuthentication | None:
        """The chosen policy of a level (MESH, NAMESPACE or WORKLOAD), if any."""
        return next((d.policy for d in self.levels if d.level is level), None)

    def mode_for_port(self, port: int) -> MtlsMode:
        """The mode enforced on a workload (target) port."""
        return self.port_modes.get(port, self.mode)

    def explain_port(self, port: int) -> PortDecision:
        """The mode of ``port`` with the level and policy that decided it."""
        workload = self.policy_at(Level.WORKLOAD)
        if workload is not None and port in workload.port_level_mtls:
            own = workload.port_level_mtls[port]
            if own is MtlsMode.UNSET:
                return PortDecision(
                    port,
                    self.mode,
                    self.decided_by,
                    self.deciding_policy,
                    f"port {port} of {workload.meta.key} is UNSET: inherits workload mode "
                    f"{self.mode.value}",
                )
            return PortDecision(
                port,
                own,
                Level.PORT,
                workload,
                f"portLevelMtls {port} of {workload.meta.key} sets {own.value}",
            )
        return PortDecision(port, self.mode, self.decided_by, self.deciding_policy, self.reason)


@dataclass(frozen=True)
class NamespaceMtls:
    """A namespace's mode for client auto mTLS, with the policy that decided it."""

    namespace: str
    mode: NamespaceMtlsMode
    policy: PeerAuthentication | None
    reason: str


def _oldest_first(policies: Iterable[PeerAuthentication]) -> list[PeerAuthentication]:
    # sorted() is stable: equal keys keep the caller's order, which is input order.
    return sorted(policies, key=lambda p: p.precedence_key)


@dataclass(frozen=True)
class _NamespaceEntry:
    selectorless: PeerAuthentication | None
    duplicates: tuple[PeerAuthentication, ...]
    with_selector: tuple[PeerAuthentication, ...]  # oldest first


class PeerAuthenticationIndex:
    """PeerAuthentications grouped by namespace once, so composing per workload is cheap.

    Composition for a workload looks only at its namespace's and the root namespace's entries.
    """

    def __init__(self, policies: Iterable[PeerAuthentication], mesh: MeshConfig) -> None:
        self.root_namespace = mesh.root_namespace
        grouped: dict[str, list[PeerAuthentication]] = {}
        for policy in policies:
            grouped.setdefault(policy.namespace, []).append(policy)
        self._entries: dict[str, _NamespaceEntry] = {}
        for namespace, items in grouped.items():
            ordered = _oldest_first(items)
            selectorless = [p for p in ordered if not p.has_selector]
            self._entries[namespace] = _NamespaceEntry(
                selectorless=selectorless[0] if selectorless else None,
                duplicates=tuple(selectorless[1:]),
                with_selector=tuple(p for p in ordered if p.has_selector),
            )
        self._namespace_modes: dict[str, NamespaceMtls] = {}

    def _entry(self, namespace: str) -> _NamespaceEntry | None:
        return self._entries.get(namespace)

    def compose(self, namespace: str, labels: Mapping[str, str]) -> EffectiveMtls:
        """Effective mTLS of a workload in ``namespace`` with ``labels``."""
        ignored: list[IgnoredPolicy] = []
        root = self._entry(self.root_namespace)
        mesh_policy = root.selectorless if root else None
        if root is not None:
            for dup in root.duplicates:
                ignored.append(_duplicate(dup, root.selectorless))
            for p in root.with_selector:
                if p.selector is not None and p.selector.matches(labels):
                    ignored.append(
                        IgnoredPolicy(
                            p,
                            f"{p.meta.key} has a selector in the root namespace "
                            f"{self.root_namespace}; Istio ignores such policies",
                        )
                    )

        namespace_policy: PeerAuthentication | None = None
        workload_candidates: list[PeerAuthentication] = []
        if namespace != self.root_namespace:
            entry = self._entry(namespace)
            if entry is not None:
                namespace_policy = entry.selectorless
                for dup in entry.duplicates:
                    ignored.append(_duplicate(dup, entry.selectorless))
                workload_candidates = [
                    p
                    for p in entry.with_selector
                    if p.selector is not None and p.selector.matches(labels)
                ]
        workload_policy = workload_candidates[0] if workload_candidates else None

        mode = DEFAULT_MODE
        decided_by = Level.DEFAULT
        deciding: PeerAuthentication | None = None
        levels: list[LevelDecision] = []
        for level, policy in (
            (Level.MESH, mesh_policy),
            (Level.NAMESPACE, namespace_policy),
            (Level.WORKLOAD, workload_policy),
        ):
            if policy is None:
                continue
            if policy.mtls is MtlsMode.UNSET:
                reason = (
                    f"{level.value} policy {policy.meta.key} is UNSET: inherits {mode.value}"
                    + (" (default)" if deciding is None else f" from {deciding.meta.key}")
                )
            else:
                mode, decided_by, deciding = policy.mtls, level, policy
                reason = f"{level.value} policy {policy.meta.key} sets {mode.value}"
            levels.append(LevelDecision(level, policy, policy.mtls, mode, reason))

        port_modes: dict[int, MtlsMode] = {}
        if workload_policy is not None:
            for port, own in sorted(workload_policy.port_level_mtls.items()):
                port_modes[port] = mode if own is MtlsMode.UNSET else own

        applied = [*workload_candidates]
        applied += [p for p in (namespace_policy, mesh_policy) if p is not None]
        return EffectiveMtls(
            namespace=namespace,
            labels=FrozenMap(labels),
            mode=mode,
            decided_by=decided_by,
            deciding_policy=deciding,
            port_modes=FrozenMap(port_modes),
            levels=tuple(levels),
            applied=tuple(applied),
            ignored=tuple(ignored),
            overridden=tuple(workload_candidates[1:]),
        )

    def namespace_mode(self, namespace: str) -> NamespaceMtls:
        """The namespace-level mode clients use for auto mTLS (``GetNamespaceMutualTLSMode``).

        The namespace's own selector-less policy (UNSET resolves to the mesh mode, or
        PERMISSIVE); else the mesh policy (UNSET means PERMISSIVE); else UNKNOWN.
        """
        cached = self._namespace_modes.get(namespace)
        if cached is not None:
            return cached
        result = self._namespace_mode(namespace)
        self._namespace_modes[namespace] = result
        return result

    def _namespace_mode(self, namespace: str) -> NamespaceMtls:
        root = self._entry(self.root_namespace)
        mesh_policy = root.selectorless if root else None
        mesh_mode: NamespaceMtlsMode | None = None
        if mesh_policy is not None:
            mesh_mode = _to_namespace_mode(mesh_policy.mtls)
        entry = self._entry(namespace)
        ns_policy = entry.selectorless if entry and namespace != self.root_namespace else None
        if ns_policy is not None:
            if ns_policy.mtls is not MtlsMode.UNSET:
                mode = _to_namespace_mode(ns_policy.mtls)
                return NamespaceMtls(
                    namespace,
                    mode,
                    ns_policy,
                    f"namespace policy {ns_policy.meta.key} sets {mode.value}",
                )
            if mesh_mode is not None and mesh_policy is not None:
                return NamespaceMtls(
                    namespace,
                    mesh_mode,
                    ns_policy,
                    f"namespace policy {ns_policy.meta.key} is UNSET: inherits "
                    f"{mesh_mode.value} from mesh policy {mesh_policy.meta.key}",
                )
            return NamespaceMtls(
                namespace,
                NamespaceMtlsMode.PERMISSIVE,
                ns_policy,
                f"namespace policy {ns_policy.meta.key} is UNSET and there is no mesh policy: "
                "PERMISSIVE",
            )
        if mesh_mode is not None and mesh_policy is not None:
            return NamespaceMtls(
                namespace,
                mesh_mode,
                mesh_policy,
                f"no namespace policy; mesh policy {mesh_policy.meta.key} gives {mesh_mode.value}",
            )
        return NamespaceMtls(
            namespace,
            NamespaceMtlsMode.UNKNOWN,
            None,
            f"neither namespace {namespace} nor the root namespace {self.root_namespace} "
            "has a selector-less PeerAuthentication",
        )


def _to_namespace_mode(mode: MtlsMode) -> NamespaceMtlsMode:
    if mode is MtlsMode.UNSET:
        return NamespaceMtlsMode.PERMISSIVE
    return NamespaceMtlsMode(mode.value)


def _duplicate(policy: PeerAuthentication, kept: PeerAuthentication | None) -> IgnoredPolicy:
    kept_key = kept.meta.key if kept is not None else "?"
    return IgnoredPolicy(
        policy,
        f"{policy.meta.key} is a newer selector-less policy in namespace {policy.namespace}; "
        f"only the oldest ({kept_key}) counts",
    )


def build_peer_authentication_index(
    policies: Iterable[PeerAuthentication], mesh: MeshConfig
) -> PeerAuthenticationIndex:
    """Group ``policies`` by namespace once (do this per snapshot, not per workload)."""
    return PeerAuthenticationIndex(policies, mesh)


def compose_peer_authentication(
    namespace: str,
    labels: Mapping[str, str],
    policies: Iterable[PeerAuthentication],
    mesh: MeshConfig,
) -> EffectiveMtls:
    """Effective inbound mTLS of one workload (builds a throw-away index)."""
    return PeerAuthenticationIndex(policies, mesh).compose(namespace, labels)


def compose_namespace_mode(
    namespace: str, policies: Iterable[PeerAuthentication], mesh: MeshConfig
) -> NamespaceMtls:
    """A namespace's mode for client auto mTLS (builds a throw-away index)."""
    return PeerAuthenticationIndex(policies, mesh).namespace_mode(namespace)
