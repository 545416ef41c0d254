"""The line-recording YAML loader."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from meshsec.config.sources import yaml_lines
from meshsec.config.sources.yaml_lines import MAX_DEPTH, parse_yaml_text


class _PureLoader(yaml.SafeLoader):
    """PyYAML's pure-Python parser (used when libyaml is not installed)."""


@pytest.fixture(autouse=True, params=["libyaml", "pure-python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with both parsers: their error messages and marks differ."""
    if request.param == "pure-python":
        monkeypatch.setattr(yaml_lines, "_LineLoader", _PureLoader)
    return str(request.param)


def test_records_key_and_item_lines() -> None:
    text = textwrap.dedent(
        """\
        # comment
        apiVersion: v1
        spec:
          rules:
          - from:
            - a
            - b
          mtls:
            mode: STRICT
        """
    )
    (doc,) = parse_yaml_text(text, file="f.yaml").documents
    assert doc.line == 2
    assert doc.lines[("apiVersion",)] == 2
    assert doc.lines[("spec", "rules")] == 4
    assert doc.lines[("spec", "rules", 0)] == 5
    assert doc.lines[("spec", "rules", 0, "from", 1)] == 7
    assert doc.lines[("spec", "mtls", "mode")] == 9
    assert doc.line_of(("spec", "mtls", "mode", "nope")) == 9
    assert doc.line_of(("other",)) == 2


def test_multi_document_indices_and_first_line_offset() -> None:
    loaded = parse_yaml_text("a: 1\n---\nb: 2\n---\n", file="f", first_line=10)
    assert [(d.index, d.line, d.data) for d in loaded.documents] == [
        (0, 10, {"a": 1}),
        (1, 12, {"b": 2}),
        (2, 14, None),
    ]


def test_merge_keys_are_resolved() -> None:
    (doc,) = parse_yaml_text("base: &b {x: 1}\nchild:\n  <<: *b\n  y: 2\n", file="f").documents
    assert doc.data == {"base": {"x": 1}, "child": {"x": 1, "y": 2}}


@pytest.mark.parametrize(
    ("text", "code", "line", "says"),
    [
        ("a: [1\n", "MS0001", 2, "invalid YAML"),
        ("a: 1\na: 2\n", "MS0112", 2, "key 'a' appears twice"),
        ("? [a, b]\n: 1\n", "MS0001", 1, "must be a plain value"),
        ("a: *nope\n", "MS0001", 1, "alias"),
        ("a:\n\tb: 1\n", "MS0001", 2, "spaces, not tabs"),
        ("d: 2001-02-30\n", "MS0001", 1, "bad scalar value"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", "MS0001", 1, "too"),
    ],
    ids=["syntax", "duplicate-key", "complex-key", "undefined-alias", "tab", "bad-date", "deep"],
)
def test_problems_become_diagnostics(text: str, code: str, line: int, says: str) -> None:
    loaded = parse_yaml_text(text, file="f.yaml")
    problems = [*loaded.diagnostics, *(p for d in loaded.documents for p in d.load_errors)]
    assert any(p.code == code and p.line == line and says in p.message for p in problems), [
        str(p) for p in problems
    ]


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    loaded = parse_yaml_text("\n".join(lines) + "\n", file="bomb.yaml")
    assert any("too large" in d.message for d in loaded.diagnostics)
    assert loaded.documents[0].data is None


def test_depth_limit_constant_is_sane() -> None:
    assert 32 <= MAX_DEPTH <= 1000


def test_broken_middle_document_does_not_hide_later_ones() -> None:
    text = "a: 1\n---\nb: [\n---\nc: 3\n"
    loaded = parse_yaml_text(text, file="f")
    assert [d.data for d in loaded.documents] == [{"a": 1}, {"c": 3}]
    assert [d.line for d in loaded.documents] == [1, 5]
    assert [d.code for d in loaded.diagnostics] == ["MS0001"]
    assert loaded.diagnostics[0].line == 4  # the parser notices at the next marker


DEPTH_BOMBS = {
    "flow-lists": "a: " + "[" * 100_000 + "\n",
    "flow-mappings": "{a: " * 100_000 + "\n",
    "block-lists": "- " * 20_000 + "x\n",
}


@pytest.mark.parametrize("text", DEPTH_BOMBS.values(), ids=DEPTH_BOMBS.keys())
def test_depth_bombs_are_refused_before_composing(text: str) -> None:
    """libyaml's composer recurses in C: composing these killed the process (SIGSEGV)."""
    loaded = parse_yaml_text("a: 1\n---\n" + text + "---\nc: 3\n", file="deep.yaml")
    assert [d.data for d in loaded.documents] == [{"a": 1}, {"c": 3}]
    (problem,) = loaded.diagnostics
    assert problem.code == "MS0001"
    assert (problem.file, problem.line) == ("deep.yaml", 3)
    assert f"nested more than {MAX_DEPTH} levels" in problem.message
    assert "document 1 " in problem.message


def test_depth_just_under_the_limit_loads() -> None:
    depth = MAX_DEPTH - 1
    (doc,) = parse_yaml_text("[" * depth + "]" * depth + "\n", file="f").documents
    assert doc.load_errors == ()
    inner: object = doc.data
    for _ in range(depth - 1):
        assert isinstance(inner, list)
        (inner,) = inner
    assert inner == []


def test_depth_limit_line_is_where_the_limit_is_crossed() -> None:
    text = "a:\n  b: [\n" + "[\n" * (MAX_DEPTH + 5) + "\n"
    (problem,) = parse_yaml_text(text, file="f", first_line=10).diagnostics
    # levels 1-2: the mappings on text lines 1-2; 3: b's list (line 2); level n > 3: line n - 1
    text_line = (MAX_DEPTH + 1) - 1
    assert problem.line == 10 + text_line - 1
