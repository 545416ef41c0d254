"""Deeply nested remote secrets and settings files are refused with a reason, never an uncaught
RecursionError (which escaped the CA's remote-secret watcher: PyYAML's composer recurses)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from meshsec.ca.remote_secret import RemoteSecretError, parse_kubeconfig, parse_remote_secret
from meshsec.config.errors import ConfigError
from meshsec.config.load import load_settings_file

DEEP = "a: " + "[" * 2_000 + "\n"  # far past the recursion limit


def test_deep_secret_is_a_remote_secret_error() -> None:
    with pytest.raises(RemoteSecretError, match="nested too deeply"):
        parse_remote_secret(DEEP, source="deep.yaml")


def test_deep_kubeconfig_is_a_remote_secret_error() -> None:
    with pytest.raises(RemoteSecretError, match="cluster2: kubeconfig is nested too deeply"):
        parse_kubeconfig(DEEP, source="s.yaml", key="cluster2")


def test_deep_kubeconfig_inside_a_secret_refuses_the_secret() -> None:
    secret = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: istio-remote-secret-c2\n"
        "  namespace: istio-system\n  labels: {istio/multiCluster: 'true'}\n"
        f"data:\n  cluster2: {base64.b64encode(DEEP.encode()).decode()}\n"
    )
    with pytest.raises(RemoteSecretError, match="nested too deeply"):
        parse_remote_secret(secret, source="s.yaml")


def test_deep_settings_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(DEEP, encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_settings_file(path)
