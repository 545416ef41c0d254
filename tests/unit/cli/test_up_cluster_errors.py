"""``meshsec up`` with a bad ``kind: Cluster`` manifest: exit 2, every mistake with its file and
line, and nothing started — no ``.meshsec`` state, no process — with or without ``--check``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from meshsec.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "primary-remote"

HEAD = "apiVersion: meshsec.io/v1alpha1\nkind: Cluster\n"
PRIMARY = HEAD + "metadata: {name: cluster1}\nspec: {role: primary}\n"


def clusters(*specs: tuple[str, str]) -> str:
    """cluster1 (primary) first, then ``(name, spec)`` documents (line 7 is the second's spec)."""
    return PRIMARY + "".join(f"---\n{HEAD}metadata: {{name: {n}}}\nspec: {s}\n" for n, s in specs)


CASES = {
    # (clusters.yaml, [(file, line, text)]) — the remotes cluster2 and cluster3 hold workloads
    "unknown-role": (
        clusters(("cluster2", "{role: secondary}"), ("cluster3", "{role: remote}")),
        [("clusters.yaml", 9, "invalid role 'secondary'; valid values: primary, remote")],
    ),
    "remote-of-unknown-primary": (
        clusters(("cluster2", "{role: remote, primary: cluster9}"), ("cluster3", "{role: remote}")),
        [("clusters.yaml", 9, "spec.primary 'cluster9': no Cluster by that name")],
    ),
    "remote-of-a-remote": (
        clusters(
            ("cluster2", "{role: remote, primary: cluster3}"),
            ("cluster3", "{role: remote, primary: cluster1}"),
        ),
        [("clusters.yaml", 9, "spec.primary 'cluster3' is a remote cluster")],
    ),
    "no-primary": (
        f"{HEAD}metadata: {{name: cluster2}}\nspec: {{role: remote}}\n---\n"
        f"{HEAD}metadata: {{name: cluster3}}\nspec: {{role: remote}}\n",
        [("clusters.yaml", 4, "no Cluster has role: primary")],
    ),
    "duplicate-name": (
        clusters(
            ("cluster2", "{role: remote}"),
            ("cluster3", "{role: remote}"),
            ("cluster2", "{role: primary}"),
        ),
        [("clusters.yaml", 18, "Cluster 'cluster2' is defined twice (first at")],
    ),
    "workload-in-unknown-cluster": (
        clusters(("cluster2", "{role: remote}")),  # productpage runs in cluster3 too
        [("workloads.yaml", None, "spec.cluster 'cluster3': no kind: Cluster by that name")],
    ),
}


def mesh_dir(tmp_path: Path, clusters_yaml: str) -> Path:
    directory = tmp_path / "primary-remote"
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns(".meshsec"))
    (directory / "clusters.yaml").write_text(clusters_yaml)
    return directory


def line_of(path: Path, text: str) -> int:
    return 1 + next(i for i, line in enumerate(path.read_text().splitlines()) if text in line)


@pytest.mark.parametrize("check", [False, True], ids=["up", "up-check"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_clusters_name_file_and_line_and_start_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, list[tuple[str, int | None, str]]],
    check: bool,
) -> None:
    clusters_yaml, expected = case
    directory = mesh_dir(tmp_path, clusters_yaml)
    code = main(["up", str(directory), *(["--check"] if check else [])])
    out = capsys.readouterr().out
    assert code == 2, out
    assert "; nothing started" in out
    for file, line, text in expected:
        path = directory / file
        if line is None:  # the first workload of cluster3 in the example
            line = line_of(path, "cluster: cluster3")
        hit = next((x for x in out.splitlines() if text in x), None)
        assert hit is not None, out
        assert f"{path}:{line}:" in hit
    assert not (directory / ".meshsec").exists()
