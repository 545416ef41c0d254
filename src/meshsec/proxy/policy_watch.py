"""The watched Istio config directory of one sidecar: snapshots in, live policy and port modes out.

:class:`PolicyController` reads the directory once (:class:`~meshsec.config.sources.files.
DirectorySource`), builds the :class:`~meshsec.proxy.policy.PolicyView` of this sidecar's
workload and keeps it current:

* **settled edits** — an edit is applied once the directory reads the same on two consecutive
  polls: an editor that truncates and rewrites a file leaves it empty for a moment, and reading
  it then would drop its policies (an AuthorizationPolicy gone = allow);
* **broken edits** — an edit that adds errors is rejected by the source (diagnostics logged with
  file:line, shown in ``/config_dump`` as ``rejected_edit``), the last good snapshot stays;
* **fail closed** — errors in the *first* read mean the directory could not be read completely:
  every connection and request is denied and the sidecar is not ready until a clean read is
  accepted;
* **modes** — the inbound listeners attached with :meth:`PolicyController.attach` get the port's
  effective PeerAuthentication mode on every accepted snapshot; open connections keep theirs.

What the workload is and which workloads the registry holds are functions of the snapshot,
given by the caller: fixed for ``meshsec up`` (its ``sidecar.json``), read from the directory's
Workloads for ``meshsec proxy run --config-dir`` (:func:`build_policy_controller`: the workload
named by ``--workload``, ports from ``--inbound`` with the protocol the workload declares unless
written, registry from the Workloads annotated ``meshsec.io/address``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from meshsec.config.errors import ConfigError
from meshsec.config.proxy import InboundSpec, ProxySettings
from meshsec.config.sources.files import DirectorySource, digest, load_snapshot, read_files
from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.snapshot import PolicySnapshot
from meshsec.proxy.inbound import PortMode
from meshsec.proxy.policy import LivePolicy, PolicyView
from meshsec.proxy.registry import (
    PortBinding,
    Registry,
    WorkloadEntry,
    build_registry,
    build_workload_entry,
)
from meshsec.runtime.clock import Clock

log = logging.getLogger("meshsec.proxy.policy")

Identify = Callable[[PolicySnapshot], WorkloadEntry | None]
RegistryOf = Callable[[PolicySnapshot], Registry]


class ModedListener(Protocol):
    mode: PortMode


def identify_workload(
    ref: str, ports: tuple[PortBinding, ...], trust_domain: Callable[[PolicySnapshot], str]
) -> Identify:
    """The workload ``NAME.NAMESPACE`` of each snapshot with this sidecar's ``ports``."""
    name, _, namespace = ref.partition(".")

    def identify(snapshot: PolicySnapshot) -> WorkloadEntry | None:
        for workload in snapshot.workloads_in(namespace):
            if workload.name == name:
                return build_workload_entry(workload, trust_domain(snapshot), ports)
        return None

    return identify


class PolicyController:
    def __init__(
        self,
        paths: Sequence[Path],
        *,
        identify: Identify,
        registry_of: RegistryOf,
        clock: Clock,
        interval: float = 1.0,
        workload_ref: str = "",
    ) -> None:
        self.paths = tuple(paths)
        self.identify = identify
        self.registry_of = registry_of
        self.clock = clock
        self.interval = interval
        self.source = DirectorySource(
            self.paths, clock=clock, interval=interval, on_rejected=self._log_rejected
        )
        first = self.source.snapshot()
        entry = identify(first)
        if entry is None:
            errors = sum(1 for d in first.diagnostics if d.level is Level.ERROR)
            shown = ", ".join(str(p) for p in self.paths)
            raise ConfigError(
                [
                    f"--workload {workload_ref}: no Workload (or Pod) named so in {shown}"
                    + (f" ({errors} error(s) while reading it)" if errors else "")
                ]
            )
        self.workload = entry
        self.live = LivePolicy(PolicyView(first, registry_of(first), entry))
        self._ports: list[tuple[PortBinding, ModedListener]] = []
        self.on_applied: Callable[[], None] | None = None  # after each applied edit
        self._last_seen = first.version
        self._check_complete(first)

    @property
    def view(self) -> PolicyView:
        return self.live.view

    @property
    def blocked(self) -> str:
        return self.live.blocked

    def attach(self, binding: PortBinding, listener: ModedListener) -> None:
        """Keep ``listener.mode`` equal to the effective mode of ``binding.port``."""
        self._ports.append((binding, listener))

    def port_mode(self, port: int) -> PortMode:
        return self.view.port_mode(port)

    @staticmethod
    def _log_rejected(diagnostics: tuple[Diagnostic, ...]) -> None:
        """Every diagnostic of a rejected edit, each with its file:line (the source logs the
        first one with the rejection)."""
        for diagnostic in diagnostics[1:]:
            log.warning("  rejected edit: %s", diagnostic)

    # applying ---------------------------------------------------------------------------------
    def _check_complete(self, snapshot: PolicySnapshot) -> None:
        errors = [d for d in snapshot.diagnostics if d.level is Level.ERROR]
        if errors:
            self.live.blocked = f"{len(errors)} error(s), first: {errors[0]}"
            log.error("configuration incomplete, denying all requests: %s", self.live.blocked)
            for diagnostic in errors[1:]:
                log.error("  %s", diagnostic)
        elif self.live.blocked:
            log.info("configuration complete again (version %s)", snapshot.version)
            self.live.blocked = ""

    def apply(self, snapshot: PolicySnapshot) -> None:
        entry = self.identify(snapshot)
        if entry is None:
            log.warning(
                "workload %s is no longer in the configuration; keeping its last labels",
                self.workload.key,
            )
            entry = self.workload
        self.workload = entry
        view = PolicyView(snapshot, self.registry_of(snapshot), entry)
        self.live.swap(view)
        self._check_complete(snapshot)
        for binding, listener in self._ports:
            mode = view.port_mode(binding.port)
            if listener.mode is not mode:
                log.info(
                    "port %d: mTLS mode %s -> %s", binding.port, listener.mode.value, mode.value
                )
                listener.mode = mode
        log.info("policy version %s applied", snapshot.version)
        if self.on_applied is not None:
            self.on_applied()

    def poll(self) -> bool:
        """Apply an edit once the directory reads the same on two consecutive polls."""
        contents, _ = read_files(list(self.paths))
        seen = digest(contents)
        settled = seen == self._last_seen
        self._last_seen = seen
        if not settled or seen == self.view.version:
            return False
        if self.source.poll():
            self.apply(self.source.snapshot())
            return True
        return False

    async def watch(self) -> None:
        """Poll every ``interval`` until cancelled; a failing reload never stops the proxy."""
        while True:
            await self.clock.sleep(self.interval)
            try:
                self.poll()
            except Exception:  # a bug in one reload must not take the data plane down
                log.exception("policy reload failed; keeping version %s", self.view.version)

    # introspection ----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "workload": self.workload.key,
            "policy_version": self.view.version,
            "rejected_edit": [str(d) for d in self.source.rejected],
            "policy": {
                "source": [str(p) for p in self.paths],
                "version": self.view.version,
                "blocked": self.blocked or None,
                "authorization_policies": [p.ref for p in self.view.authz_policies],
            },
        }


def effective_trust_domain(snapshot: PolicySnapshot, settings: ProxySettings) -> tuple[str, ...]:
    """The mesh trust domain and aliases: the config's ``istio`` ConfigMap when it has one,
    else the ``--trust-domain`` / ``--trust-domain-alias`` settings."""
    mesh = snapshot.mesh_config
    if mesh.origin is not None:
        return (mesh.trust_domain, *mesh.trust_domain_aliases)
    return (settings.trust_domain, *settings.trust_domain_aliases)


def build_policy_controller(settings: ProxySettings, clock: Clock) -> PolicyController:
    """``--config-dir`` + ``--workload``: the workload and the registry from the directory."""
    assert settings.config_dir is not None
    name, _, namespace = settings.workload.partition(".")
    declared = next(
        (w for w in load_snapshot([settings.config_dir]).workloads_in(namespace) if w.name == name),
        None,
    )

    def protocol(spec: InboundSpec) -> str:
        """``:http``/``:tcp`` as written, else what the workload declares (Istio picks a port's
        protocol from its declaration too)."""
        if not spec.protocol_given and declared is not None:
            port_spec = declared.port_spec(spec.port)
            if port_spec is not None:
                return port_spec.protocol.lower()
        return "http" if spec.http else "tcp"

    ports = tuple(
        PortBinding(spec.port, spec.app_port, spec.port, protocol(spec))
        for spec in settings.inbound_specs
    )

    def trust_domain(snapshot: PolicySnapshot) -> str:
        return effective_trust_domain(snapshot, settings)[0]

    controller = PolicyController(
        [settings.config_dir],
        identify=identify_workload(settings.workload, ports, trust_domain),
        registry_of=lambda snapshot: build_registry(snapshot, trust_domain(snapshot)),
        clock=clock,
        interval=settings.config_poll_interval.total_seconds(),
        workload_ref=settings.workload,
    )
    for binding in ports:
        if declared is not None and binding.port not in declared.ports:
            log.warning(
                "--inbound port %d is not a port of %s (declared: %s): Services that target "
                "it will not list this workload as an endpoint",
                binding.port,
                declared.ref,
                ", ".join(map(str, declared.ports)) or "none",
            )
    return controller
