"""Tests of condupdate.jobs.check and the value checks that a run shares with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from condupdate._errors import DataError, ExtrapolationWarning
from condupdate.jobs.check import check
from condupdate.jobs.config import parse_config
from condupdate.jobs.run import run

# Year indices of 1860-1889 and 1890-1899 in the 40-year test file.
TRAIN_YEARS = slice(0, 30)
APPLY_YEARS = slice(30, 40)


def _condupdate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "condupdate", *args], capture_output=True, text=True, cwd=cwd, check=False
    )


def _domain_mean(values: np.ndarray) -> np.ndarray:
    # Cos-latitude weighted mean over (latitude, longitude) of a (time, latitude, longitude) array.
    from conftest import LATITUDE

    weights = np.broadcast_to(np.cos(np.deg2rad(LATITUDE))[None, :, None], values.shape)
    finite = np.isfinite(values)
    return np.where(finite, values * weights, 0.0).sum((1, 2)) / np.where(finite, weights, 0.0).sum((1, 2))


@pytest.fixture
def tiny_config(temperature_file, run_config):
    return parse_config(run_config([temperature_file]))


def test_check_counts_complete_samples(tiny_config, temperature_dataset):
    values = temperature_dataset().air_temperature.values
    report = check(tiny_config)

    assert report.train_samples == int(np.isfinite(values[TRAIN_YEARS]).sum())
    assert report.apply_samples == int(np.isfinite(values[APPLY_YEARS]).sum())
    assert report.train_size == 30
    assert report.apply_size == 10
    assert report.calendar == "360_day"
    assert report.sample_sizes == {"time": 40, "latitude": 6, "longitude": 8}
    assert report.masked_fraction["air_temperature"] == pytest.approx(np.isnan(values).mean())


def test_check_counts_subset_samples(tiny_config, temperature_dataset):
    values = temperature_dataset().air_temperature.values
    report = check(tiny_config)

    expected = {f"{start}-{start + 4}": int(np.isfinite(values[start - 1860 : start - 1855]).sum()) for start in range(1860, 1890, 5)}
    assert report.subsets == expected


def test_check_reports_predictor_ranges(tiny_config, temperature_dataset):
    values = temperature_dataset().air_temperature.values
    train, apply = _domain_mean(values[TRAIN_YEARS]), _domain_mean(values[APPLY_YEARS])
    report = check(tiny_config)

    (predictor,) = report.predictors
    assert predictor.name == "domain_mean_temperature"
    assert predictor.units == "K"
    assert predictor.train_min == pytest.approx(train.min())
    assert predictor.train_max == pytest.approx(train.max())
    assert predictor.apply_min == pytest.approx(apply.min())
    assert predictor.apply_max == pytest.approx(apply.max())
    assert predictor.distance == pytest.approx(max(apply.max() - train.max(), 0.0) / train.std(ddof=1))
    assert report.n_parameters == 3 * 8 + 8 + 8 * 1 + 1
    assert report.warnings == []


def test_check_warns_beyond_training_range(temperature_dataset, write_netcdf, run_config, tmp_path):
    field = temperature_dataset()
    field["air_temperature"][30:] += 10.0  # [K], far beyond the training range
    raw = run_config([write_netcdf(field, tmp_path / "warm.nc")])

    report = check(parse_config(raw))

    assert report.predictors[0].distance > 3.0
    assert any("domain_mean_temperature" in message for message in report.warnings)


def test_run_warns_extrapolation(temperature_dataset, write_netcdf, run_config, tmp_path):
    field = temperature_dataset()
    field["air_temperature"][30:] += 10.0  # [K]
    config = parse_config(run_config([write_netcdf(field, tmp_path / "warm.nc")]))

    with pytest.warns(ExtrapolationWarning, match="training standard deviations beyond its training range"):
        result = run(config)

    assert float(result.distance.max()) > 3.0


def test_cli_check_prints_report(temperature_file, run_config, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(run_config([temperature_file])))

    proc = _condupdate("check", str(path), cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert "1286 complete samples" in proc.stdout
    assert "1860-1864 (213)" in proc.stdout
    assert "Predictor 'domain_mean_temperature' [K]" in proc.stdout
    assert "Network: 41 parameters" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["air_temperature.nc", "tiny.yaml"]


def test_cli_check_bad_key_exits_2(temperature_file, run_config, tmp_path):
    raw = run_config([temperature_file])
    raw["training"]["epoch"] = 3
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))

    proc = _condupdate("check", str(path))

    assert proc.returncode == 2
    assert "training.epoch: unknown key" in proc.stderr


def test_cli_check_missing_variable_exits_2(temperature_file, run_config, tmp_path):
    raw = run_config([temperature_file])
    raw["data"]["targets"] = ["sea_surface_temperature"]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))

    proc = _condupdate("check", str(path))

    assert proc.returncode == 2
    assert "'sea_surface_temperature' (data.targets) not found" in proc.stderr


# --------------------------------------------------------------------------- #
# Value checks, through check() and run()
# --------------------------------------------------------------------------- #


@pytest.fixture
def all_nan_target_config(temperature_dataset, write_netcdf, run_config, tmp_path):
    field = temperature_dataset()
    field["sea_ice_fraction"] = field.air_temperature * np.nan
    raw = run_config([write_netcdf(field, tmp_path / "field.nc")])
    raw["data"]["targets"] = ["air_temperature", "sea_ice_fraction"]
    return parse_config(raw)


@pytest.fixture
def all_nan_input_config(temperature_dataset, write_netcdf, run_config, tmp_path):
    field = temperature_dataset()
    field["sea_level_pressure"] = field.air_temperature * np.nan
    raw = run_config([write_netcdf(field, tmp_path / "field.nc")])
    raw["data"]["inputs"].append({"name": "pressure", "variable": "sea_level_pressure"})
    return parse_config(raw)


@pytest.fixture
def nan_subset_config(temperature_dataset, write_netcdf, run_config, tmp_path):
    field = temperature_dataset()
    field["air_temperature"][5:10] = np.nan  # 1865-1869, the second subset
    return parse_config(run_config([write_netcdf(field, tmp_path / "field.nc")]))


@pytest.fixture
def empty_apply_config(temperature_file, run_config):
    raw = run_config([temperature_file])
    raw["split"]["apply"] = ["1950", "1960"]
    return parse_config(raw)


@pytest.mark.parametrize("job", [check, run])
def test_all_nan_target_raises(all_nan_target_config, job):
    with pytest.raises(DataError, match=r"Target variable 'sea_ice_fraction' \(data.targets\) is NaN at every sample"):
        job(all_nan_target_config)


@pytest.mark.parametrize("job", [check, run])
def test_all_nan_input_raises(all_nan_input_config, job):
    with pytest.raises(DataError, match=r"Input 'pressure' \(data.inputs\) is NaN at every sample"):
        job(all_nan_input_config)


@pytest.mark.parametrize("job", [check, run])
def test_nan_subset_raises(nan_subset_config, job):
    with pytest.raises(DataError, match="Subset '1865-1869' .* has no complete sample"):
        job(nan_subset_config)


@pytest.mark.parametrize("job", [check, run])
def test_empty_apply_selection_raises(empty_apply_config, job):
    with pytest.raises(DataError, match=r"split\.apply = \['1950', '1960'\]"):
        job(empty_apply_config)


def test_cli_check_rejects_holdout_of_too_many_subsets(temperature_file, run_config, tmp_path):
    raw = run_config([temperature_file])
    raw["update"] = {"select": {"candidates": [{"parameters": "biases"}], "holdout": 40}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    n_subsets = len(check(parse_config(run_config([temperature_file]))).subsets)

    for command in ("check", "run"):
        proc = _condupdate(command, str(path), *(["--out", str(tmp_path / "out")] if command == "run" else []))
        assert proc.returncode == 2, proc.stderr
        assert "update.select.holdout = 40" in proc.stderr or "Lower update.select.holdout" in proc.stderr
        assert f"at most {n_subsets - 2}" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
