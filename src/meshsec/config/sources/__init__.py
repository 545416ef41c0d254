"""Config sources: where policy snapshots come from (a directory of YAML; later Kubernetes)."""

from meshsec.config.sources.base import ConfigSource

__all__ = ["ConfigSource"]
