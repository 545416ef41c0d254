"""Errors of configuration loading."""

from __future__ import annotations

from collections.abc import Sequence

from meshsec.errors import MeshsecError


class ConfigError(MeshsecError):
    """Settings that cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            super().__init__(
                f"{len(self.problems)} configuration problems:\n"
                + "\n".join(f"  - {p}" for p in self.problems)
            )
