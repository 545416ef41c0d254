"""`meshsec analyze`: output formats and exit codes (0 clean/warnings, 1 errors, 2 unreadable)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshsec.cli.main import main
from meshsec.core.policy import diagnostics as dg

SEED = Path(__file__).parents[3] / "fixtures" / "seed"

WARN_ONLY = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: foo}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: SIMPLE}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["analyze", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_input_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(SEED / "mesh"))
    assert code == 0
    assert out.splitlines()[0].split() == ["LEVEL", "CODE", "LOCATION", "RESOURCE", "MESSAGE"]
    assert "MS0004" in out
    assert "0 error(s), 0 warning(s), 1 info" in out


def test_warnings_only_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dr.yaml").write_text(WARN_ONLY, encoding="utf-8")
    code, out, _ = run(capsys, str(tmp_path))
    assert code == 0
    assert "IST0128" in out
    assert f"{tmp_path / 'dr.yaml'}:7" in out


def test_errors_exit_one_and_table_has_every_column(capsys: pytest.CaptureFixture[str]) -> None:
    path = SEED / "mistakes" / "session-cache.yaml"
    code, out, _ = run(capsys, str(path))
    assert code == 1
    (row,) = [line for line in out.splitlines() if "maxSessionAge'" in line]
    assert row.startswith("Error  MS0101")
    assert f"{path}:12" in row
    assert "DestinationRule my-namespace/my-service" in row


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(SEED / "mistakes"), "-o", "json")
    assert code == 1
    records = json.loads(out)
    assert isinstance(records, list)
    assert set(records[0]) == {
        "code",
        "name",
        "level",
        "resource",
        "file",
        "line",
        "path",
        "message",
    }
    session = [r for r in records if r["path"] == "spec.trafficPolicy.tls.maxSessionAge"]
    assert session == [
        {
            "code": "MS0101",
            "name": "UnknownField",
            "level": "Error",
            "resource": "DestinationRule my-namespace/my-service",
            "file": str(SEED / "mistakes" / "session-cache.yaml"),
            "line": 12,
            "path": "spec.trafficPolicy.tls.maxSessionAge",
            "message": session[0]["message"],
        }
    ]
    assert {r["code"] for r in records} >= {"MS0001", "MS0101", "MS0112", "MS0201"}


def test_several_paths_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dr.yaml").write_text(WARN_ONLY, encoding="utf-8")
    code, out, _ = run(capsys, str(SEED / "mesh"), str(tmp_path / "dr.yaml"), "--output", "json")
    assert code == 0
    assert {r["code"] for r in json.loads(out)} == {"MS0004", "IST0128"}


@pytest.mark.parametrize("args", [["/nonexistent/meshsec"], []], ids=["missing-path", "no-path"])
def test_unreadable_input_exits_two(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert "no such file or directory" in out or "give at least one" in err


def test_empty_directory_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(tmp_path))
    assert code == 0
    assert "MS0007" in out


def test_bad_output_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, str(SEED / "mesh"), "-o", "yaml")
    assert code == 2


def test_list_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--list-codes")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(dg.CATALOG)
    assert any(line.startswith("IST0128  Warning") for line in lines)
    assert any(line.startswith("MS0301   Error") for line in lines)


def test_catalog_codes_are_unique_and_stable() -> None:
    codes = [c.code for c in dg.CATALOG]
    assert len(codes) == len(set(codes))
    assert {"IST0101", "IST0127", "IST0128", "IST0129"} <= set(codes)
    assert all(c.startswith(("MS0", "IST0")) and len(c) in (6, 7) for c in codes)


@pytest.mark.parametrize(
    ("threshold", "code"),
    [("Error", 0), ("Warning", 1), ("Info", 1)],
)
def test_failure_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], threshold: str, code: int
) -> None:
    (tmp_path / "dr.yaml").write_text(WARN_ONLY, encoding="utf-8")
    assert run(capsys, str(tmp_path), "--failure-threshold", threshold)[0] == code


def test_output_threshold_hides_lower_levels_but_not_the_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, str(SEED / "mistakes"), "--output-threshold", "Error", "-o", "json")
    assert code == 1
    levels = {r["level"] for r in json.loads(out)}
    assert levels == {"Error"}
    code, out, _ = run(capsys, str(SEED / "mesh"), "--output-threshold", "Warning")
    assert (code, out.strip()) == (0, "no problems found")


def test_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    yaml_text = (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: a, namespace: b}\nspec: {mtls: {mode: strict}}\n"
    )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(yaml_text.encode())))
    code, out, _ = run(capsys, "-", "-o", "json")
    assert code == 1
    (record,) = [r for r in json.loads(out) if r["code"] == "MS0103"]
    assert (record["file"], record["line"]) == ("<stdin>", 4)


def test_diagnostics_without_a_file_show_a_dash(capsys: pytest.CaptureFixture[str]) -> None:
    path = SEED / "mistakes" / "meshpolicy.yaml"
    _, out, _ = run(capsys, str(path), str(SEED / "mesh" / "my-namespace.yaml"))
    (row,) = [line for line in out.splitlines() if "MS0304" in line]
    assert row.split()[2] == "-"
