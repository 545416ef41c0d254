"""Reading state.json and naming workloads: where the file is found, what is refused, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshsec.cli.admin_http import AdminUnavailable, fetch_json, split_address
from meshsec.cli.mesh_view import UnknownService
from meshsec.cli.meshstate import (
    MeshStateError,
    UnknownWorkload,
    find_state_file,
    load_mesh_state,
    require_running,
    resolve_workload,
)
from meshsec.cli.operator_output import (
    compose_cli_command,
    exit_code_for,
    format_duration,
    format_rfc3339,
    print_table,
)
from tests.fakes.operator_admin import closed_port_addr, workload_entry, write_state


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return write_state(
        tmp_path / "mesh",
        [
            workload_entry("photo-frontend", "photo-ns"),
            workload_entry("db", "datastore-ns"),
            workload_entry("db", "other-ns"),
        ],
    )


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(lambda p: p.parent.parent, id="mesh-dir"),
        pytest.param(lambda p: p.parent, id="dot-meshsec-dir"),
        pytest.param(lambda p: p, id="state-file"),
    ],
)
def test_find_state_file_from_mesh_option(state_path: Path, given: object) -> None:
    assert find_state_file(given(state_path), cwd=Path("/")) == state_path  # type: ignore[operator]


def test_find_state_file_walks_upward(state_path: Path) -> None:
    deep = state_path.parent.parent / "a" / "b"
    deep.mkdir(parents=True)
    assert find_state_file(None, cwd=deep) == state_path


def test_no_state_file_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(MeshStateError, match="meshsec up"):
        find_state_file(None, cwd=tmp_path)
    with pytest.raises(MeshStateError, match="no such directory"):
        find_state_file(tmp_path / "nope", cwd=tmp_path)


def test_state_is_parsed(state_path: Path) -> None:
    state = load_mesh_state(state_path)
    assert state.trust_domain == "cluster.local"
    assert [w.ref for w in state.workloads] == [
        "photo-frontend.photo-ns",
        "db.datastore-ns",
        "db.other-ns",
    ]
    assert state.workloads[0].spiffe_id == "spiffe://cluster.local/ns/photo-ns/sa/photo-frontend"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("{not json", "not valid JSON", id="bad-json"),
        pytest.param('{"version": 2}', "version 2 is not supported", id="future-version"),
        pytest.param("[]", "top level: expected an object", id="not-object"),
        pytest.param(
            '{"version": 1, "workloads": [{"namespace": "x"}]}',
            r"workloads\[0\]\.name",
            id="workload-without-name",
        ),
        pytest.param(
            '{"version": 1, "workloads": [{"name": "a", "namespace": "x", "labels": [1]}]}',
            r"workloads\[0\]\.labels",
            id="labels-not-object",
        ),
        pytest.param('{"version": 1, "ca": {"addr": 5}}', r"ca\.addr", id="ca-addr-not-string"),
    ],
)
def test_bad_state_names_the_file_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(MeshStateError, match=message) as info:
        load_mesh_state(path)
    assert str(path) in str(info.value)


def test_stale_state_is_not_running(tmp_path: Path) -> None:
    # pid 2**22+1 is above the default pid_max: never a live process.
    path = write_state(tmp_path, [], pid=2**22 + 1)
    with pytest.raises(MeshStateError, match="is not running"):
        require_running(load_mesh_state(path))


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param("photo-frontend", "photo-frontend.photo-ns", id="unique-name"),
        pytest.param("photo-frontend.photo-ns", "photo-frontend.photo-ns", id="qualified"),
        pytest.param("db.other-ns", "db.other-ns", id="qualified-among-several"),
    ],
)
def test_resolve_workload(state_path: Path, ref: str, expected: str) -> None:
    assert resolve_workload(ref, load_mesh_state(state_path).workloads).ref == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        pytest.param("nope", "no workload 'nope'", id="unknown"),
        pytest.param("photo-frontend.wrong-ns", "no workload", id="wrong-namespace"),
    ],
)
def test_resolve_workload_errors_list_known(state_path: Path, ref: str, message: str) -> None:
    with pytest.raises(UnknownWorkload, match=message) as info:
        resolve_workload(ref, load_mesh_state(state_path).workloads)
    assert "photo-frontend.photo-ns" in str(info.value)


def test_ambiguous_name_lists_the_candidates(state_path: Path) -> None:
    with pytest.raises(UnknownWorkload, match="'db' is ambiguous") as info:
        resolve_workload("db", load_mesh_state(state_path).workloads)
    assert info.value.known == ("db.datastore-ns", "db.other-ns")
    assert "say which with name.namespace[@cluster]" in str(info.value)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        pytest.param(UnknownWorkload("x", "no", ["a.b"]), 2, id="unknown-workload"),
        pytest.param(UnknownService("no"), 2, id="unknown-service"),
        pytest.param(MeshStateError("gone"), 3, id="no-mesh"),
        pytest.param(AdminUnavailable("agent", closed_port_addr(), "refused"), 3, id="agent-down"),
    ],
)
def test_exit_code_table(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(86399, "23h59m"), (90061, "1d1h"), (250, "4m10s"), (-120, "-2m0s")],
)
def test_format_duration(seconds: int, text: str) -> None:
    from datetime import timedelta

    assert format_duration(timedelta(seconds=seconds)) == text


def test_rfc3339_is_utc_with_z() -> None:
    assert format_rfc3339("2026-11-23T06:00:00+01:00") == "2026-11-23T05:00:00Z"
    assert json.dumps(format_rfc3339(None)) == '""'


@pytest.mark.parametrize(
    "addr",
    [
        pytest.param("10.0.0.1:15000", id="private-ip"),
        pytest.param("example.com:80", id="hostname"),
        pytest.param("127.0.0.1:99999", id="port-out-of-range"),
        pytest.param("127.0.0.1", id="no-port"),
        pytest.param(":15000", id="no-host"),
        pytest.param("127.0.0.1:0", id="port-zero"),
    ],
)
def test_admin_addresses_must_be_loopback(addr: str) -> None:
    with pytest.raises(AdminUnavailable, match=r"loopback|HOST:PORT|out of range|port 0") as info:
        fetch_json("agent", addr, "/debug/secrets")
    assert addr in str(info.value)


@pytest.mark.parametrize("addr", ["127.0.0.1:1", "[::1]:1", "localhost:1", "127.1.2.3:1"])
def test_loopback_addresses_are_accepted(addr: str) -> None:
    assert split_address(addr)[1] == 1


def test_table_cells_are_not_rich_markup(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(("A",), [("[red]x[/red] [link=http://e]y",)])
    assert "[red]x[/red] [link=http://e]y" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("on_path", "cwd", "expected"),
    [
        pytest.param("same", "root", "meshsec", id="on-path-is-this-install"),
        pytest.param(None, "root", ".venv/bin/meshsec", id="not-on-path"),
        pytest.param("other", "root", ".venv/bin/meshsec", id="path-has-another-meshsec"),
        pytest.param(None, "elsewhere", "{root}/.venv/bin/meshsec", id="outside-cwd-absolute"),
    ],
)
def test_cli_command_for_hints(
    tmp_path: Path, on_path: str | None, cwd: str, expected: str
) -> None:
    root = tmp_path / "repo"
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "meshsec").write_text("#!/bin/sh\n")
    other = tmp_path / "other-meshsec"
    other.write_text("#!/bin/sh\n")
    path = {"same": str(bin_dir / "meshsec"), "other": str(other), None: None}[on_path]
    got = compose_cli_command(
        on_path=path,
        executable=str(bin_dir / "python"),
        cwd=root if cwd == "root" else tmp_path / "elsewhere",
    )
    assert got == expected.format(root=root)


def test_cli_command_without_a_script_uses_python_m(tmp_path: Path) -> None:
    got = compose_cli_command(on_path=None, executable="/usr/bin/python3", cwd=tmp_path)
    assert got == "/usr/bin/python3 -m meshsec"
