"""YAML text → :class:`SourceDocument` values that remember the line of every field.

PyYAML's safe loader builds plain data but forgets positions; here a ``SafeLoader`` subclass
composes the node graph and we construct the data ourselves, recording the 1-based start line of
each mapping key and list item under its field path. Nothing here raises on bad input: syntax
errors, duplicate keys, unhashable keys, alias bombs and absurd nesting all become diagnostics.

A syntax error stops PyYAML's stream, so when one happens the text is re-read document by
document (split on ``---`` lines): documents before and after the broken one still load.

PyYAML composes nodes recursively (libyaml's composer in C: ~50k nested ``[`` overflow the C
stack and kill the process), so before composing, the event stream is scanned iteratively and a
text nesting lists/mappings deeper than :data:`MAX_DEPTH` is refused without being composed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import Diagnostic
from meshsec.core.policy.document import (
    FieldPath,
    LoadedText,
    SourceDocument,
    count_digits,
    format_path,
)

MAX_DEPTH = 100
MAX_NODES = 200_000
MAX_INT_DIGITS = 4300
"""Longer integers are refused (Python's own int/str conversion limit: str() of one raises)."""
_BIG_INT = 10**MAX_INT_DIGITS
_INT_TAG = "tag:yaml.org,2002:int"
_DOC_MARKER = re.compile(r"^(---|\.\.\.)(\s|$)")


_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_Base):  # type: ignore[valid-type,misc]
    """A safe loader (libyaml's parser when available: ~10x faster) whose documents we
    construct ourselves, keeping node lines."""


class _TooLarge(Exception):
    pass


@dataclass
class _Build:
    loader: _LineLoader
    file: str
    offset: int
    lines: dict[FieldPath, int] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)
    nodes: int = 0

    def line(self, node: Node) -> int:
        return node.start_mark.line + 1 + self.offset

    def problem(self, info: dg.CodeInfo, message: str, node: Node, path: FieldPath) -> None:
        self.problems.append(
            dg.make(info, message, file=self.file, line=self.line(node), path=format_path(path))
        )

    def build(self, node: Node, path: FieldPath, depth: int) -> object:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge(f"more than {MAX_NODES} YAML nodes (alias expansion?)")
        if depth > MAX_DEPTH:
            raise _TooLarge(f"nested deeper than {MAX_DEPTH} levels")
        self.lines.setdefault(path, self.line(node))
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            out: list[object] = []
            for i, item in enumerate(node.value):
                self.lines.setdefault((*path, i), self.line(item))
                out.append(self.build(item, (*path, i), depth + 1))
            return out
        return self._scalar(node, path)

    def _scalar(self, node: Node, path: FieldPath) -> object:
        try:
            value = self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            digits = sum(c.isdigit() for c in node.value) if node.tag == _INT_TAG else 0
            if digits > MAX_INT_DIGITS:  # int() refuses: Python's conversion limit
                self.problem(dg.YAML_SYNTAX, _too_many_digits(digits), node, path)
            else:
                self.problem(dg.YAML_SYNTAX, f"bad scalar value: {_reason(exc)}", node, path)
            return None
        if isinstance(value, int) and not -_BIG_INT < value < _BIG_INT:
            digits = count_digits(value)  # e.g. 0x... is not limited, but str() of it would be
            if digits > MAX_INT_DIGITS:
                self.problem(dg.YAML_SYNTAX, _too_many_digits(digits), node, path)
                return None
        return value

    def _mapping(self, node: MappingNode, path: FieldPath, depth: int) -> dict[object, object]:
        try:
            self.loader.flatten_mapping(node)  # resolve '<<' merge keys
        except yaml.YAMLError as exc:
            self.problem(dg.YAML_SYNTAX, f"bad merge key: {_reason(exc)}", node, path)
            return {}
        out: dict[object, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(
                    dg.YAML_SYNTAX,
                    "a mapping key must be a plain value, not a list or mapping",
                    key_node,
                    path,
                )
                continue
            key = self._scalar(key_node, path)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            part: str | int = key if isinstance(key, str | int) else str(key)
            if key in out:
                hint = ""
                if not path and key in ("apiVersion", "kind"):
                    hint = "; several objects in one document? separate them with a '---' line"
                self.problem(
                    dg.DUPLICATE_KEY,
                    f"key {key!r} appears twice in this mapping; YAML forbids it and Kubernetes "
                    f"rejects the object{hint}",
                    key_node,
                    (*path, part),
                )
                continue
            self.lines[(*path, part)] = self.line(key_node)
            out[key] = self.build(value_node, (*path, part), depth + 1)
        return out


def _too_many_digits(digits: int) -> str:
    return (
        f"bad scalar value: the number has too many digits ({digits}): ports are 1-65535, and "
        "other numbers in Kubernetes and Istio objects fit in 64 bits (at most 19 digits)"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        text = ", ".join(parts) if parts else str(exc)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _hint(exc: yaml.YAMLError, text: str) -> str:
    reason = _reason(exc)
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        lines = text.splitlines()
        index = mark.line
        if 0 <= index < len(lines) and "\t" in lines[index][: mark.column + 1]:
            return "; YAML indentation must use spaces, not tabs"
    if "alias" in reason:
        return (
            "; a plain value starting with '*' is read as a YAML alias: quote it "
            '(e.g. host: "*.local")'
        )
    if "anchor" in reason:
        return "; a plain value starting with '&' is read as a YAML anchor: quote it"
    return ""


def _error_line(exc: BaseException, offset: int) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return (mark.line + 1 + offset) if mark is not None else offset + 1


_OPEN_EVENTS: frozenset[type[yaml.Event]] = frozenset(
    {yaml.SequenceStartEvent, yaml.MappingStartEvent}
)
_CLOSE_EVENTS: frozenset[type[yaml.Event]] = frozenset(
    {yaml.SequenceEndEvent, yaml.MappingEndEvent}
)


def _scan_depth(text: str, file: str, offset: int, first_index: int) -> Diagnostic | None:
    """The problem if ``text`` nests collections deeper than :data:`MAX_DEPTH`, else None.

    Iterative over parser events (libyaml's parser and PyYAML's are state machines; only the
    composers recurse), and it stops at the limit, so hostile input costs ~MAX_DEPTH events.
    Syntax errors are left to the composing pass, which meets them at the same place.
    """
    try:
        loader = _LineLoader(text)
    except yaml.YAMLError:
        return None
    depth = 0
    document = first_index - 1
    check_event, get_event = loader.check_event, loader.get_event
    try:
        while check_event():
            event = get_event()
            kind = type(event)
            if kind in _OPEN_EVENTS:
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    line = (mark.line if mark is not None else 0) + 1 + offset
                    return dg.make(
                        dg.YAML_SYNTAX,
                        f"document {document} is too deeply nested to load: lists/mappings "
                        f"nested more than {MAX_DEPTH} levels (level {depth} starts on line "
                        f"{line}); nothing in this document was read",
                        file=file,
                        line=line,
                    )
            elif kind in _CLOSE_EVENTS:
                depth -= 1
            elif kind is yaml.DocumentStartEvent:
                document += 1
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    return None


def _load_stream(
    text: str, file: str, offset: int, first_index: int
) -> tuple[list[SourceDocument], list[Diagnostic], bool]:
    """Documents of ``text`` until the first syntax error; the bool says whether one happened."""
    docs: list[SourceDocument] = []
    problems: list[Diagnostic] = []
    too_deep = _scan_depth(text, file, offset, first_index)
    if too_deep is not None:  # composing it could overflow the C stack: never compose it
        return docs, [too_deep], True
    try:
        loader = _LineLoader(text)  # the reader rejects control characters up front
    except yaml.YAMLError as exc:
        problems.append(
            dg.make(
                dg.YAML_SYNTAX,
                f"invalid YAML: {_reason(exc)}",
                file=file,
                line=_error_line(exc, offset),
            )
        )
        return docs, problems, True
    index = first_index
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            build = _Build(loader, file, offset)
            try:
                data = build.build(node, (), 0)
            except _TooLarge as exc:
                problems.append(
                    dg.make(
                        dg.YAML_SYNTAX,
                        f"document {index} is too large to load: {exc}",
                        file=file,
                        line=build.line(node),
                    )
                )
                data = None
            docs.append(
                SourceDocument(
                    file,
                    index,
                    data,
                    build.line(node),
                    build.lines,
                    load_errors=tuple(build.problems),
                )
            )
            index += 1
    except yaml.YAMLError as exc:
        problems.append(
            dg.make(
                dg.YAML_SYNTAX,
                f"invalid YAML: {_reason(exc)}{_hint(exc, text)}",
                file=file,
                line=_error_line(exc, offset),
            )
        )
        return docs, problems, True
    except RecursionError:
        problems.append(
            dg.make(
                dg.YAML_SYNTAX,
                "invalid YAML: nesting is too deep to parse",
                file=file,
                line=offset + 1,
            )
        )
        return docs, problems, True
    finally:
        loader.dispose()
    return docs, problems, False


def _chunks(text: str) -> list[tuple[int, str]]:
    """Split on document markers: (0-based first line, chunk text) pairs."""
    lines = text.splitlines(keepends=True)
    chunks: list[tuple[int, str]] = []
    start = 0
    for i, line in enumerate(lines):
        if i > start and _DOC_MARKER.match(line):
            chunks.append((start, "".join(lines[start:i])))
            start = i
    chunks.append((start, "".join(lines[start:])))
    return chunks


def parse_yaml_text(text: str, *, file: str, first_line: int = 1) -> LoadedText:
    """Load every YAML document in ``text`` with line numbers (``first_line`` = text's line 1).

    Pure (no I/O); this is also the :class:`~meshsec.core.policy.document.YamlTextParser` the
    policy core uses for YAML embedded in resources.
    """
    offset = first_line - 1
    docs, problems, broken = _load_stream(text, file, offset, 0)
    if not broken:
        return LoadedText(tuple(docs), tuple(problems))
    # Re-read document by document so a broken one does not hide those after it.
    docs, problems = [], []
    index = 0
    for start, chunk in _chunks(text):
        chunk_docs, chunk_problems, _ = _load_stream(chunk, file, offset + start, index)
        docs.extend(chunk_docs)
        problems.extend(chunk_problems)
        index += max(1, len(chunk_docs))
    return LoadedText(tuple(docs), tuple(problems))
