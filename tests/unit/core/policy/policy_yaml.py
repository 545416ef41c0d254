"""Test helper: YAML text → PolicySnapshot through the real line-recording loader."""

from __future__ import annotations

import textwrap

from meshsec.config.sources.yaml_lines import parse_yaml_text
from meshsec.core.policy.diagnostics import Diagnostic, Level
from meshsec.core.policy.parse import parse_documents
from meshsec.core.policy.snapshot import PolicySnapshot


def snapshot_of(text: str, file: str = "in.yaml") -> PolicySnapshot:
    loaded = parse_yaml_text(textwrap.dedent(text), file=file)
    return parse_documents(
        loaded.documents, yaml_parser=parse_yaml_text, diagnostics=loaded.diagnostics
    )


def errors(snapshot: PolicySnapshot) -> list[Diagnostic]:
    return [d for d in snapshot.diagnostics if d.level is Level.ERROR]
