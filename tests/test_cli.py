"""The condupdate command line, run as a user runs it."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("iris_sample_data")


def _condupdate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "condupdate", *args], capture_output=True, text=True, cwd=cwd, check=False
    )


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("demo") / "out"
    return _condupdate("demo", "--quick", "--out", str(out)), out


def test_demo_quick_writes_skill_csv(quick_demo):
    proc, out = quick_demo
    assert proc.returncode == 0, proc.stderr
    with open(out / "skill.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["method", "rmse", "mae", "bias"]
    assert [row[0] for row in rows[1:]] == ["parent", "child", "pattern_scaling"]
    for row in rows[1:]:
        rmse, mae = float(row[1]), float(row[2])
        assert rmse >= mae > 0


def test_demo_quick_writes_results(quick_demo):
    _, out = quick_demo
    for name in ("anomalies.nc", "predictions.nc", "config.yaml", "model/weights.pt", "model/metadata.json", "error_vs_distance.png", "error_maps.png"):
        assert (out / name).stat().st_size > 0, name


def test_demo_prints_table_and_distance(quick_demo):
    proc, _ = quick_demo
    assert "pattern_scaling" in proc.stdout
    assert "extrapolation distance" in proc.stdout


def test_demo_refuses_non_empty_output(quick_demo):
    _, out = quick_demo
    before = (out / "skill.csv").read_bytes()
    proc = _condupdate("demo", "--quick", "--out", str(out))
    assert proc.returncode == 2
    assert "--overwrite" in proc.stderr
    assert (out / "skill.csv").read_bytes() == before


def test_run_rejects_unknown_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "data:\n  paths: [x.nc]\n  targets: [t]\n  sample_dims: [time]\n  inputs: [{name: a, variable: t}]\n"
        "  colour: blue\nsplit: {dim: time, train: [1, 2], apply: [3, 4]}\npredictors: [{coordinate: time}]\n"
    )
    proc = _condupdate("run", str(config), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "data.colour" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_run_names_missing_config(tmp_path):
    proc = _condupdate("run", str(tmp_path / "absent.yaml"))
    assert proc.returncode == 2
    assert "absent.yaml" in proc.stderr


def test_help_explains_every_option():
    proc = _condupdate("demo", "--help")
    assert proc.returncode == 0
    for option in ("--out", "--quick", "--overwrite"):
        assert option in proc.stdout


def test_demo_accepts_verbose_after_command(tmp_path):
    proc = _condupdate("demo", "--quick", "-v", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    # -v sets the log level to INFO, so the fine-tuning of each subset is logged.
    assert "INFO condupdate" in proc.stderr
    assert (tmp_path / "out" / "skill.csv").is_file()
