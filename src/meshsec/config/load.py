"""The ONE settings loader. Nothing else in meshsec reads ``os.environ`` or settings files.

A settings class is a frozen dataclass whose fields carry :func:`setting` metadata: the
environment variable names that set them (Istio's names where one exists) and help text.
:func:`load_settings` builds it with precedence **defaults < file < env < flags** and reports
every bad value at once, naming where it came from (``env SECRET_TTL``, ``flag --ca-addr``,
``file agent.yaml: secretTtl``).

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Path``, ``timedelta`` (Go-style
durations such as ``24h``, ``1h30m``, ``100ms``, or plain seconds), ``tuple[str, ...]`` (comma
separated in env), their ``X | None`` forms, and any type given a ``parse=`` function.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from meshsec.config.errors import ConfigError

T = TypeVar("T")

_META_KEY = "meshsec.setting"


@dataclasses.dataclass(frozen=True)
class SettingInfo:
    env: tuple[str, ...] = ()
    help: str = ""
    parse: Callable[[str], Any] | None = None
    file_key: str | None = None


def setting(
    default: Any = dataclasses.MISSING,
    *,
    env: str | tuple[str, ...] = (),
    help: str = "",
    parse: Callable[[str], Any] | None = None,
    file_key: str | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a settings field. ``env`` names are tried in order; the first set one wins."""
    info = SettingInfo(
        env=(env,) if isinstance(env, str) else tuple(env),
        help=help,
        parse=parse,
        file_key=file_key,
    )
    metadata = {_META_KEY: info}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def setting_info(field: dataclasses.Field[Any]) -> SettingInfo:
    info = field.metadata.get(_META_KEY)
    return info if isinstance(info, SettingInfo) else SettingInfo()


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def parse_duration(text: str) -> timedelta:
    """Go-style duration (``24h``, ``1h30m``, ``250ms``) or a plain number of seconds."""
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    try:
        return timedelta(seconds=float(value))
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise ValueError(f"{text!r} is not a duration (examples: 24h, 1h30m, 90s, 100ms)")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    if value.total_seconds() == seconds:
        return f"{seconds}s"
    return f"{int(value.total_seconds() * 1000)}ms"


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


_MAX_INT_DIGITS = 19  # int64


def parse_port_number(text: str, *, minimum: int = 0) -> int | None:
    """The port ``text`` spells (ASCII digits, ``minimum``-65535), else None.

    Checks the digit count before ``int()``, which raises on long strings (and ``'²'`` passes
    ``str.isdigit``), so settings parsers can give their own message instead.
    """
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 5:
        return None
    port = int(text)
    return port if minimum <= port <= 65535 else None


def parse_host_port(value: str, *, what: str = "address", listen: bool = True) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) -> (host, port).

    A ``listen`` address may leave the host out (``:PORT`` = every interface, as in Istio); an
    address to connect to (``listen=False``) must name its host.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{what} {value[:80]!r} must be HOST:PORT (e.g. 127.0.0.1:15012)")
    port = parse_port_number(port_text)
    if port is None:
        raise ValueError(f"{what} {value[:80]!r}: port {port_text[:20]!r} is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host and not listen:
        raise ValueError(f"{what} {value[:80]!r} must name a host (HOST:PORT)")
    return (host or "0.0.0.0", port)  # noqa: S104 - ":PORT" means every interface, as in Istio


def format_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets (the inverse of :func:`parse_host_port`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _convert(value: Any, tp: Any, info: SettingInfo) -> Any:
    """Turn a raw value (string from env/flags, or YAML scalar/list) into the field's type."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError("a value is required")
    if info.parse is not None and isinstance(value, str):
        return info.parse(value)
    if info.parse is not None and not isinstance(value, base if isinstance(base, type) else object):
        return info.parse(str(value))
    if base is bool:
        return value if isinstance(value, bool) else _parse_bool(str(value))
    if base is int:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        digits = sum(c.isdigit() for c in value) if isinstance(value, str) else 0
        if digits > _MAX_INT_DIGITS:  # int() would refuse it with advice for Python programmers
            raise ValueError(
                f"the number has too many digits ({digits}): settings take ports, sizes and "
                f"counts of at most {_MAX_INT_DIGITS} digits"
            )
        return int(value)
    if base is float:
        return float(value)
    if base is str:
        return str(value)
    if base is Path:
        return Path(os.path.expanduser(str(value)))
    if base is timedelta:
        if isinstance(value, timedelta):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        return parse_duration(str(value))
    if typing.get_origin(base) is tuple:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        raise ValueError(f"{value!r} is not a list")
    if isinstance(base, type) and isinstance(value, base):
        return value
    raise TypeError(f"unsupported settings field type {base!r}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def load_settings_file(path: Path) -> dict[str, Any]:
    """Read a YAML settings file into a mapping (keys in camelCase or snake_case)."""
    import yaml  # only when a settings file is given: PyYAML is ~1 MB of RSS in every process

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError([f"settings file {path}: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"settings file {path}: not valid YAML: {exc}"]) from None
    except RecursionError:  # PyYAML's composer recurses per nesting level
        raise ConfigError([f"settings file {path}: not valid YAML: nested too deeply"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"settings file {path}: top level must be a mapping"])
    return data


def load_settings(
    cls: type[T],
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    file: Path | None = None,
    file_section: str | None = None,
) -> T:
    """Build ``cls`` from defaults < file < env < flags; raise ConfigError listing all problems.

    ``flags`` maps field names to values; ``None`` means "flag not given". ``env`` defaults to
    ``os.environ`` (pass ``{}`` to ignore the environment).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    file_data: dict[str, Any] = {}
    if file is not None:
        file_data = load_settings_file(file)
        if file_section is not None:
            section = file_data.get(file_section, {})
            if not isinstance(section, dict):
                raise ConfigError([f"settings file {file}: {file_section} must be a mapping"])
            file_data = section
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    problems: list[str] = []
    known_keys: set[str] = set()
    values: dict[str, Any] = {}
    for name, field in fields.items():
        info = setting_info(field)
        tp = hints[name]
        candidates: list[tuple[str, Any]] = []
        keys = [info.file_key] if info.file_key else [_camel(name), name]
        known_keys.update(keys)
        for key in keys:
            if key in file_data:
                candidates.append((f"file {file}: {key}", file_data[key]))
                break
        for var in info.env:
            if var in environ:
                candidates.append((f"env {var}", environ[var]))
                break
        if flags is not None and flags.get(name) is not None:
            flag_value = flags[name]
            if not (isinstance(flag_value, list | tuple) and not flag_value):
                candidates.append((f"flag --{name.replace('_', '-')}", flag_value))
        if not candidates:
            continue
        source, raw = candidates[-1]
        try:
            values[name] = _convert(raw, tp, info)
        except (ValueError, TypeError) as exc:
            problems.append(f"{source}: {exc}")
    for key in file_data:
        if key not in known_keys:
            problems.append(f"settings file {file}: unknown key {key!r}")
    if problems:
        raise ConfigError(problems)
    missing = [
        n
        for n, f in fields.items()
        if n not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError([f"{_describe(fields[n])} is required" for n in missing])
    try:
        return cls(**values)
    except ValueError as exc:  # cross-field validation in __post_init__
        raise ConfigError([str(exc)]) from None


def _describe(field: dataclasses.Field[Any]) -> str:
    info = setting_info(field)
    where = f"--{field.name.replace('_', '-')}"
    if info.env:
        where += f" (env {info.env[0]})"
    return where


class SettingDoc(typing.NamedTuple):
    """One settings field for people: (flag, env vars, default, help) first, then the field
    ``name`` and its settings-file key."""

    flag: str
    env: str
    default: str
    help: str
    name: str
    file_key: str


def _show_default(value: Any) -> str:
    """A default as a user would write it: ``24h``, ``true``, ``a,b``; "" for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"  # as Istio writes relative paths (str() drops the ./)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple | list):
        return ",".join(_show_default(v) for v in value)
    return str(value)


def describe_settings(cls: type[Any]) -> list[SettingDoc]:
    """Every field of a settings class, for docs/configuration.md and --help.

    ``flag`` is the field's name as a flag (``--field-name``); a command may spell its flag
    differently or have none. ``env`` lists the variables in the order they are tried.
    """
    rows = []
    for field in dataclasses.fields(cls):
        info = setting_info(field)
        if field.default is not dataclasses.MISSING:
            shown = _show_default(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            shown = _show_default(field.default_factory())
        else:
            shown = "(required)"
        rows.append(
            SettingDoc(
                flag=f"--{field.name.replace('_', '-')}",
                env=", ".join(info.env),
                default=shown,
                help=info.help,
                name=field.name,
                file_key=info.file_key or _camel(field.name),
            )
        )
    return rows
