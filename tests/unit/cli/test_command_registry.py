"""The lazy command registry: every command group is reachable, by name and from --help."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import meshsec.cli
from meshsec.cli.main import COMMAND_MODULES, main


def test_every_module_with_register_is_in_the_registry() -> None:
    with_register = {
        info.name
        for info in pkgutil.iter_modules(meshsec.cli.__path__)
        if callable(getattr(importlib.import_module(f"meshsec.cli.{info.name}"), "register", None))
    }
    assert with_register == set(COMMAND_MODULES.values())


@pytest.mark.parametrize("command", sorted(COMMAND_MODULES))
def test_each_command_resolves_to_its_module(command: str) -> None:
    assert main([command, "--help"]) == 0


def test_a_command_imports_only_its_own_group() -> None:
    code = (
        "import sys; from meshsec.cli.main import main\n"
        "rc = main(['version'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('meshsec.cli.') and m != "
        "'meshsec.cli.main')\n"
        "print(rc, loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "0 ['meshsec.cli.version']"
