"""Tests of the wind-uncertainty case: the wind loader, the subset script and a quick run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from condupdate import regimes
from condupdate.bench.cases import CASES, configs_dir
from condupdate.data import open_dataset
from condupdate.datasets import load_dataset
from condupdate.datasets.winds import WINDS_FILE, load_winds
from condupdate.jobs.config import load_config, parse_config, resolve_path
from condupdate.jobs.run import run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "data" / "scripts" / "make_winds_subset.py"
DEBIAN_FILE = Path("/usr/share/ferret-vis/data/monthly_navy_winds.cdf")


def _script():
    spec = importlib.util.spec_from_file_location("make_winds_subset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _merge(base: dict, changes: dict) -> dict:
    # Key-by-key merge of the quick overrides, nested mappings included.
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


# --------------------------------------------------------------------------- #
# Loader
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def winds() -> xr.Dataset:
    return load_winds()


def test_load_winds_grid_and_units(winds):
    assert dict(winds.sizes) == {"time": 132, "lat": 17, "lon": 65}
    assert float(winds.lat.min()) == -20.0
    assert float(winds.lon.max()) == 280.0
    for name in ("wind_speed", "uwnd", "vwnd"):
        assert winds[name].attrs["units"] == "m s-1"
    first, last = winds.time.values[0], winds.time.values[-1]
    assert (first.year, first.month, first.day) == (1982, 1, 1)
    assert (last.year, last.month, last.day) == (1992, 12, 1)


def test_load_winds_speed_is_vector_norm(winds):
    expected = np.sqrt(winds.uwnd.values.astype("float64") ** 2 + winds.vwnd.values.astype("float64") ** 2)
    np.testing.assert_allclose(winds.wind_speed.values, expected, rtol=1e-6)


def test_load_winds_season_is_annual_phase(winds):
    january, july = winds.isel(time=0), winds.isel(time=6)
    assert float(january.season_sin) == pytest.approx(np.sin(np.pi / 12))
    assert float(july.season_cos) == pytest.approx(np.cos(13 * np.pi / 12))


def test_load_winds_soi_aligns_by_label(winds):
    soi = open_dataset(resolve_path("sample:SOI_Darwin.nc"))["SOI_Darwin"]

    aligned = regimes.external_predictor(soi, winds, "time")

    assert aligned.sizes["time"] == 132
    # SOI of 1983-01 in the file: the strongest El Nino month of the period.
    assert float(aligned.isel(time=12)) == pytest.approx(-3.503491, abs=1e-5)


def test_load_dataset_registry_returns_winds(winds):
    xr.testing.assert_identical(load_dataset("wind-uncertainty"), winds)


def test_load_winds_missing_file_raises(tmp_path):
    missing = tmp_path / "winds.nc"
    with pytest.raises(FileNotFoundError, match=f"Wind subset '{missing}' not found.*make_winds_subset.py"):
        load_winds(missing)


# --------------------------------------------------------------------------- #
# Subset script
# --------------------------------------------------------------------------- #


@pytest.mark.skipif(not DEBIAN_FILE.is_file(), reason="needs the Debian package ferret-datasets")
def test_subset_script_reproduces_committed_file(tmp_path):
    script = _script()

    rebuilt = script.write_subset(script.make_subset(DEBIAN_FILE), tmp_path / "winds.nc")

    with xr.open_dataset(rebuilt) as new, xr.open_dataset(WINDS_FILE) as committed:
        xr.testing.assert_identical(new.load(), committed.load())


def test_subset_script_missing_source_raises(tmp_path):
    script = _script()
    with pytest.raises(FileNotFoundError, match="ferret-datasets"):
        script.make_subset(tmp_path / "monthly_navy_winds.cdf")


# --------------------------------------------------------------------------- #
# The case
# --------------------------------------------------------------------------- #


def test_wind_case_quick_run(tmp_path):
    config = load_config(configs_dir() / CASES["wind-uncertainty"].config)
    raw = _merge(config.model_dump(mode="json"), CASES["wind-uncertainty"].quick)

    result = run(parse_config(raw), out_dir=tmp_path / "out")

    table = result.skill["wind_speed"]
    assert list(table["method"].values) == ["parent", "child", "pattern_scaling"]
    assert set(table.data_vars) >= {"rmse", "crps", "spread_skill_ratio"}
    assert bool(np.isfinite(table.crps.sel({"method": ["parent", "child"]})).all())
    predictions = result.predictions["wind_speed"]
    assert predictions.child.sizes == {"time": 24, "lat": 5, "lon": 17}
    assert float(predictions.child_std.min()) > 0
