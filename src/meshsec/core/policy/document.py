"""Loaded YAML documents with line numbers, and a typed field reader that reports diagnostics.

The YAML loading itself lives in the shell (``meshsec.config.sources.files``); it hands the core
:class:`SourceDocument` values: plain Python data (dicts, lists, str, int, float, bool, None,
dates) plus a map from field path to the 1-based line where that field's key (or list item)
starts. :class:`DocumentReader` reads typed values out of the data, never raises on bad input,
and turns every problem into a :class:`~meshsec.core.policy.diagnostics.Diagnostic` carrying the
file, the line and the field path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from typing import Protocol, TypeVar

from meshsec.core.policy import diagnostics as dg
from meshsec.core.policy.diagnostics import CodeInfo, Diagnostic, Level
from meshsec.core.policy.model import FrozenMap

FieldPath = tuple[str | int, ...]
E = TypeVar("E", bound=Enum)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_decimal(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``'²'``, which ``int()`` rejects)."""
    return text.isascii() and text.isdigit()


_LOG10_2 = 0.30102999566398120
_SHORT_DIGITS = 20
_SHORT_NUMBER = 10**_SHORT_DIGITS


def count_digits(value: int) -> int:
    """Decimal digits of ``abs(value)``, without ``str()`` (which refuses over 4300 digits)."""
    value = abs(value)
    if value < _SHORT_NUMBER:
        return len(str(value))
    guess = int(value.bit_length() * _LOG10_2)  # digits are guess or guess + 1
    return guess + 1 if value >= 10**guess else guess


def too_many_port_digits(value: int | str, what: str = "port") -> str | None:
    """For a port written with over 20 digits (a decimal string, or a number): the message to
    show instead of quoting it; None otherwise. ``int()`` of a decimal string over 4300 digits
    raises, so callers check this before converting."""
    if isinstance(value, str):
        digits = len(value.lstrip("0")) if is_decimal(value) else 0
    else:
        digits = count_digits(value)
    if digits <= _SHORT_DIGITS:
        return None
    return f"{what} has too many digits ({digits}): ports are 1-65535"


def parse_port_text(text: str) -> int | None:
    """The port 1-65535 that ASCII-decimal ``text`` spells, else None (never raises)."""
    if not is_decimal(text) or len(text.lstrip("0")) > 5:
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def format_path(path: FieldPath) -> str:
    """``("spec", "rules", 0, "from")`` → ``spec.rules[0].from``; odd keys are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


@dataclass(frozen=True)
class SourceDocument:
    """One YAML document as loaded by a shell.

    ``file`` is the path as given; ``index`` the 0-based document index in the file; ``line``
    the line the document starts on; ``lines`` maps field paths (relative to ``data``) to lines
    (missing paths resolve to their nearest recorded parent); ``display_prefix`` is prepended to
    reported paths (the items of a ``kind: List`` report ``items[3].spec...``, YAML embedded in
    a field ``data.mesh...``); ``load_errors`` are problems the loader found inside this document
    (duplicate keys, bad scalars): they count as errors of the resource, which is then not
    loaded.
    """

    file: str
    index: int
    data: object
    line: int = 1
    lines: Mapping[FieldPath, int] = field(default_factory=dict)
    display_prefix: FieldPath = ()
    load_errors: tuple[Diagnostic, ...] = ()

    def line_of(self, path: FieldPath) -> int:
        """The line of ``path`` or of its closest recorded ancestor."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return self.line

    def children(self, key: str, items: list[object]) -> list[SourceDocument]:
        """The items of the list under ``key`` (a ``List``'s ``items``) as documents of their
        own, each with its slice of the line map and of the load errors (one pass over each)."""
        lines: dict[int, dict[FieldPath, int]] = {}
        for path, line in self.lines.items():
            if len(path) >= 2 and path[0] == key and isinstance(path[1], int):
                lines.setdefault(path[1], {})[path[2:]] = line
        errors: dict[int, list[Diagnostic]] = {}
        head = format_path((*self.display_prefix, key)) + "["
        for diag in self.load_errors:
            if diag.path.startswith(head):
                number = diag.path[len(head) :].split("]", 1)[0]
                if is_decimal(number):
                    errors.setdefault(int(number), []).append(diag)
        return [
            SourceDocument(
                self.file,
                self.index,
                item,
                self.line_of((key, i)),
                lines.get(i, {}),
                (*self.display_prefix, key, i),
                tuple(errors.get(i, ())),
            )
            for i, item in enumerate(items)
        ]


@dataclass(frozen=True)
class LoadedText:
    """What a YAML text parser returns: its documents plus problems (syntax errors...)."""

    documents: tuple[SourceDocument, ...]
    diagnostics: tuple[Diagnostic, ...] = ()


class YamlTextParser(Protocol):
    """Turns YAML text into documents; given to the core by the shell (the core has no YAML).

    Used for YAML embedded in a resource, such as the ``mesh`` key of the ``istio`` ConfigMap.
    ``first_line`` is the line the text starts on in ``file``.
    """

    def __call__(self, text: str, *, file: str, first_line: int) -> LoadedText: ...


def suggest(word: str, choices: Collection[str]) -> str | None:
    """The closest valid name: same letters ignoring case/underscores/dashes, else difflib."""
    norm = word.replace("_", "").replace("-", "").lower()
    for choice in choices:
        if choice.replace("_", "").replace("-", "").lower() == norm:
            return choice
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return close[0] if close else None


# Hints for fields people copy from blogs and other proxies: what Istio has instead.
FIELD_HINTS: Mapping[str, str] = {
    "maxSessionAge": "Istio's ClientTLSSettings has no TLS session lifetime setting; to bound "
    "how long a connection lives use trafficPolicy.connectionPool.tcp.maxConnectionDuration",
    "maxSessionAgeGrace": "Istio has no TLS session grace setting; see "
    "trafficPolicy.connectionPool.tcp.maxConnectionDuration",
    "minProtocolVersion": "TLS versions are mesh-wide: meshConfig.meshMTLS.minProtocolVersion",
    "cipherSuites": "cipher suites are mesh-wide: meshConfig.meshMTLS.cipherSuites",
    "matchExpressions": "Istio's WorkloadSelector supports only matchLabels",
    "peers": "'peers' belonged to the removed authentication.istio.io/v1alpha1 Policy; "
    "PeerAuthentication uses spec.mtls.mode",
}


def describe_type(value: object) -> str:
    """A YAML-ish type name for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, datetime | date):
        return "timestamp"
    return type(value).__name__


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        digits = count_digits(value)
        if (
            digits > _SHORT_DIGITS
        ):  # repr() of a huge int is unreadable, and raises past 4300 digits
            return f"(a number with {digits} digits)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def show_value(value: object) -> str:
    """``value`` for a message: its repr, shortened past 80 characters (huge numbers by size)."""
    return _show(value)


_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_label_key(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label key, or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "the prefix before '/' is empty"
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"prefix {prefix!r} is not a DNS-1123 subdomain"
    if not name:
        return "the name part is empty"
    if len(name) > 63:
        return "the name part is longer than 63 characters"
    if not _LABEL_NAME.fullmatch(name):
        return "must be alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def check_label_value(value: str) -> str | None:
    """Why ``value`` is not a valid Kubernetes label value, or None."""
    if value == "":
        return None
    if len(value) > 63:
        return "longer than 63 characters"
    if not _LABEL_NAME.fullmatch(value):
        return "must be alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def check_dns1123_subdomain(value: str) -> str | None:
    if len(value) > 253:
        return "longer than 253 characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        return "must be lower-case alphanumerics, '-' or '.', starting and ending alphanumeric"
    return None


def check_dns1123_label(value: str) -> str | None:
    if len(value) > 63:
        return "longer than 63 characters"
    if not _DNS1123_LABEL.fullmatch(value):
        return "must be lower-case alphanumerics or '-', starting and ending alphanumeric"
    return None


class DocumentReader:
    """Reads typed values from a :class:`SourceDocument`, collecting diagnostics.

    Every method takes the raw value and its field path; bad values produce a diagnostic and a
    ``None`` (or empty) result, never an exception.
    """

    def __init__(self, doc: SourceDocument, resource: str = "") -> None:
        self.doc = doc
        self.resource = resource
        self.diagnostics: list[Diagnostic] = []

    @property
    def has_errors(self) -> bool:
        return any(d.level is Level.ERROR for d in self.diagnostics)

    def report(
        self, info: CodeInfo, message: str, path: FieldPath, *, level: Level | None = None
    ) -> None:
        self.diagnostics.append(
            dg.make(
                info,
                message,
                file=self.doc.file,
                line=self.doc.line_of(path),
                path=format_path(self.doc.display_prefix + path),
                resource=self.resource,
                level=level,
            )
        )

    def wrong_type(self, value: object, path: FieldPath, expected: str, hint: str = "") -> None:
        name = format_path(path) or "document"
        extra = f"; {hint}" if hint else ""
        self.report(
            dg.WRONG_TYPE,
            f"{name} must be {expected}, got {describe_type(value)} {_show(value)}{extra}",
            path,
        )

    # ---------------------------------------------------------------- containers

    def mapping(
        self, value: object, path: FieldPath, allowed: Collection[str] | None, what: str
    ) -> dict[str, object] | None:
        """A mapping with string keys; with ``allowed``, unknown keys are reported and dropped.

        ``None`` (YAML null or absent) gives ``{}``; a non-mapping gives ``None``.
        """
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.wrong_type(value, path, f"a mapping ({what})")
            return None
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.report(
                    dg.WRONG_TYPE,
                    f"{what} keys must be strings, got {describe_type(key)} {_show(key)}",
                    path,
                )
                continue
            if allowed is not None and key not in allowed:
                self._unknown_field(key, path, allowed, what)
                continue
            out[key] = item
        return out

    def _unknown_field(
        self, key: str, path: FieldPath, allowed: Collection[str], what: str
    ) -> None:
        where = format_path(path) or "the document"
        msg = f"unknown field {key!r} in {what} ({where})"
        guess = suggest(key, allowed)
        if guess:
            msg += f"; did you mean {guess!r}?"
        if key in FIELD_HINTS:
            msg += f"; {FIELD_HINTS[key]}"
        msg += f"; valid fields: {', '.join(sorted(allowed))}"
        self.report(dg.UNKNOWN_FIELD, msg, (*path, key))

    def sequence(self, value: object, path: FieldPath, what: str) -> list[object]:
        """A list (``None`` gives ``[]``); a non-list is reported and gives ``[]``."""
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            self.wrong_type(value, path, f"a list ({what})")
            return []
        return list(value)

    # ---------------------------------------------------------------- scalars

    def string(
        self, value: object, path: FieldPath, *, required: bool = False, hint: str = ""
    ) -> str | None:
        if value is None:
            if required:
                self.report(dg.MISSING_FIELD, f"{format_path(path)} is required", path)
            return None
        if not isinstance(value, str):
            quote = "quote it" if isinstance(value, int | float | bool) else ""
            self.wrong_type(value, path, "a string", hint or quote)
            return None
        if required and not value:
            self.report(dg.MISSING_FIELD, f"{format_path(path)} must not be empty", path)
            return None
        return value

    def boolean(self, value: object, path: FieldPath) -> bool | None:
        if value is None:
            return None
        if not isinstance(value, bool):
            self.wrong_type(value, path, "a boolean (true or false)")
            return None
        return value

    def strings(
        self, value: object, path: FieldPath, *, allow_empty: bool = False, hint: str = ""
    ) -> tuple[str, ...]:
        """A list of strings; bad items are reported and skipped."""
        out: list[str] = []
        for i, item in enumerate(self.sequence(value, path, "strings")):
            text = self.string(item, (*path, i), hint=hint)
            if text is None:
                continue
            if not text and not allow_empty:
                self.report(dg.INVALID_VALUE, f"{format_path((*path, i))} is empty", (*path, i))
                continue
            out.append(text)
        return tuple(out)

    def enum(self, value: object, path: FieldPath, enum_cls: type[E], what: str) -> E | None:
        """An enum by exact (upper-case) name; wrong values list the valid ones."""
        if value is None:
            return None
        valid = [m.name for m in enum_cls]
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, bool):
                hint = "YAML reads unquoted yes/no/on/off/true/false as booleans"
            self.wrong_type(value, path, f"one of {', '.join(valid)}", hint)
            return None
        if value in enum_cls.__members__:
            return enum_cls[value]
        msg = f"invalid {what} {value!r}; valid values: {', '.join(valid)}"
        guess = suggest(value, valid)
        if guess:
            msg += f" (did you mean {guess!r}? values are case-sensitive)"
        self.report(dg.INVALID_ENUM, msg, path)
        return None

    def port(self, value: object, path: FieldPath, what: str = "port") -> int | None:
        """A port number 1-65535 (an integer, or a decimal string for map keys)."""
        if isinstance(value, str) and is_decimal(value.strip()):
            value = value.strip()
            too_long = too_many_port_digits(value, what)
            if too_long is not None:
                self.report(dg.PORT_RANGE, too_long, path)
                return None
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(value, path, f"a {what} number (integer 1-65535)")
            return None
        if not 1 <= value <= 65535:
            too_long = too_many_port_digits(value, what)
            self.report(dg.PORT_RANGE, too_long or f"{what} {value} is out of range 1-65535", path)
            return None
        return value

    def timestamp(self, value: object, path: FieldPath) -> datetime | None:
        """An RFC 3339 time (string or a YAML timestamp); naive times are taken as UTC."""
        if value is None:
            return None
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("z", "Z"))
            except ValueError:
                self.report(
                    dg.INVALID_TIMESTAMP,
                    f"creationTimestamp {value!r} is not an RFC 3339 time "
                    "(e.g. 2024-05-01T12:00:00Z)",
                    path,
                )
                return None
        else:
            self.report(
                dg.INVALID_TIMESTAMP,
                f"creationTimestamp must be an RFC 3339 time, got {describe_type(value)}",
                path,
            )
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)

    def string_map(
        self, value: object, path: FieldPath, what: str, *, labels: bool
    ) -> FrozenMap[str, str]:
        """A map of string to string; with ``labels``, keys/values are checked as label syntax."""
        raw = self.mapping(value, path, None, what)
        if not raw:
            return FrozenMap()
        out: dict[str, str] = {}
        for key, item in raw.items():
            if not isinstance(item, str):
                hint = "quote it" if isinstance(item, int | float | bool) or item is None else ""
                self.wrong_type(item, (*path, key), "a string", hint)
                continue
            if labels:
                why = check_label_key(key)
                if why:
                    self.report(
                        dg.INVALID_LABEL,
                        f"invalid label key {key!r} in {what}: {why}",
                        (*path, key),
                    )
                    continue
                why = check_label_value(item)
                if why:
                    self.report(
                        dg.INVALID_LABEL,
                        f"invalid label value {item!r} for {key!r} in {what}: {why}",
                        (*path, key),
                    )
                    continue
            out[key] = item
        return FrozenMap(out)
