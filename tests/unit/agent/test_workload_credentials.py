"""Istio's ``./var/run/secrets/workload-spiffe-credentials``: when its three files exist at start
the agent serves them (``FILE_MOUNTED_CERTS``) instead of calling a CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsec.config.agent import WORKLOAD_CREDENTIALS_DIR, load_agent_settings
from meshsec.config.errors import ConfigError


def _credentials(root: Path, names: tuple[str, ...]) -> None:
    directory = root / WORKLOAD_CREDENTIALS_DIR
    directory.mkdir(parents=True)
    for name in names:
        (directory / name).write_text("pem\n")


def test_all_three_files_switch_to_mounted_certs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _credentials(tmp_path, ("cert-chain.pem", "key.pem", "root-cert.pem"))
    settings = load_agent_settings(flags={}, file=None, env={})
    assert settings.file_mounted_certs
    assert settings.mounted_certs_dir == WORKLOAD_CREDENTIALS_DIR


@pytest.mark.parametrize(
    "names",
    [(), ("cert-chain.pem", "key.pem"), ("key.pem", "root-cert.pem")],
    ids=["none", "no-root", "no-chain"],
)
def test_incomplete_set_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    _credentials(tmp_path, names)
    settings = load_agent_settings(flags={}, file=None, env={})
    assert not settings.file_mounted_certs
    assert settings.mounted_certs_dir == Path("./etc/certs")


def test_explicit_mounted_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _credentials(tmp_path, ("cert-chain.pem", "key.pem", "root-cert.pem"))
    settings = load_agent_settings(
        flags={"file_mounted_certs": True, "mounted_certs_dir": Path("mine")}, file=None, env={}
    )
    assert settings.mounted_certs_dir == Path("mine")


def test_with_prov_cert_it_is_a_clear_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _credentials(tmp_path, ("cert-chain.pem", "key.pem", "root-cert.pem"))
    with pytest.raises(ConfigError, match="PROV_CERT and FILE_MOUNTED_CERTS"):
        load_agent_settings(flags={}, file=None, env={"PROV_CERT": str(tmp_path)})
