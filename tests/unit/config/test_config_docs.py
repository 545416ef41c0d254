"""docs/configuration.md is generated from the settings classes and must match them."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import pytest
import typer

import meshsec.config
from meshsec.config.ca import CaSettings
from meshsec.config.load import setting_info
from scripts import gen_config_docs
from scripts.gen_config_docs import DOC, GENERATOR, Process, command_flags, render


def test_configuration_md_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"{DOC.name} is stale: run `python {GENERATOR}` and commit the result"
    )


def _settings_classes() -> set[type[Any]]:
    """Every dataclass in meshsec.config.* with a field declared by setting()."""
    found: set[type[Any]] = set()
    for module_info in pkgutil.walk_packages(meshsec.config.__path__, "meshsec.config."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
                and any(
                    setting_info(f).env or setting_info(f).help for f in dataclasses.fields(value)
                )
            ):
                found.add(value)
    return found


def test_every_settings_class_has_a_table() -> None:
    documented = {p.settings for p in gen_config_docs.processes()}
    assert _settings_classes() == documented


def test_every_field_and_env_var_is_in_the_doc() -> None:
    text = render()
    for process in gen_config_docs.processes():
        for field in dataclasses.fields(process.settings):
            for var in setting_info(field).env:
                assert f"`{var}`" in text, (process.command, field.name)


def test_real_flags_are_documented_not_field_names() -> None:
    flags = command_flags(gen_config_docs.processes()[0])
    assert flags["clusters"] == "--cluster"  # repeated flag for a list field
    assert flags["cluster_aliases"] == "--cluster-alias"
    assert "default_workload_cert_ttl" not in flags  # env/file only
    row = next(line for line in render().splitlines() if line.startswith("| `clusters` "))
    assert "`--cluster`" in row


def test_a_flag_that_matches_no_field_stops_the_generator() -> None:
    bogus = typer.Typer()

    @bogus.command("serve")
    def serve(
        listen: Annotated[str, typer.Option("--listen")] = "",
        mystery: Annotated[str, typer.Option("--mystery-knob")] = "",
    ) -> None:
        """A command with a flag no settings field backs."""

    module: Any = SimpleNamespace(register=lambda app: app.add_typer(bogus, name="ca"))
    process = Process("meshsec ca serve", "test", CaSettings, module)
    with pytest.raises(SystemExit, match="--mystery-knob matches no settings field"):
        command_flags(process)


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "docs" / "configuration.md"
    stale.parent.mkdir()
    stale.write_text(render().replace("`24h`", "`12h`", 1), encoding="utf-8")
    monkeypatch.setattr(gen_config_docs, "ROOT", tmp_path)
    monkeypatch.setattr(gen_config_docs, "DOC", stale)
    assert gen_config_docs.main(["--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert gen_config_docs.main([]) == 0
    assert gen_config_docs.main(["--check"]) == 0
