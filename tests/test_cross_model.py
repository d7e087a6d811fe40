"""The cross-model case: CMIP6 sample data on one model axis and a quick end-to-end run."""

from __future__ import annotations

import importlib.util

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("esmvaltool_sample_data") is None,
    reason="esmvaltool-sample-data not installed (pip install --no-deps esmvaltool-sample-data)",
)

from condupdate._errors import DataError  # noqa: E402
from condupdate.bench.cases import CASES, configs_dir  # noqa: E402
from condupdate.datasets.cmip import cmip6_files, load_cross_model  # noqa: E402
from condupdate.jobs.config import parse_config  # noqa: E402
from condupdate.jobs.run import run  # noqa: E402

# Calendars 360_day (KACE), julian (IITM), standard (MIROC6), noleap (CanESM5);
# E3SM-1-0 contains implausible values below ground; AWI-CM-1-1-MR has one file per year.
MODELS = ["KACE-1-0-G", "IITM-ESM", "MIROC6", "CanESM5", "E3SM-1-0", "AWI-CM-1-1-MR"]


@pytest.fixture(scope="module")
def cmip() -> xr.Dataset:
    return load_cross_model(models=MODELS)


def _raw_level(model: str, level: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Return ta at one level, (time, point) ordered by lat then lon, and the (year, month) of each step."""
    values, months = [], []
    for path in cmip6_files()[model]:
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_mask(False)
            k = int(np.argmin(np.abs(nc["plev"][:] - level)))
            ta = nc["ta"][:, k]  # (time, lat, lon)
            lat, lon = nc["lat"][:], nc["lon"][:]
            order = np.lexsort((np.tile(lon, len(lat)), np.repeat(lat, len(lon))))
            values.append(ta.reshape(len(ta), -1)[:, order])
            dates = netCDF4.num2date(nc["time"][:], nc["time"].units, nc["time"].calendar)
            months += [(d.year, d.month) for d in dates]
    return np.concatenate(values), months


def test_loader_layout(cmip):
    assert cmip["ta1000"].dims == ("model", "time", "point")
    assert list(cmip["model"].values) == MODELS
    assert cmip.sizes["time"] == 780
    assert cmip["time"].values[0].calendar == "proleptic_gregorian"
    assert cmip["ta1000"].attrs["units"] == "K"
    assert cmip["ta925_climatology"].dims == ("model",)


@pytest.mark.parametrize("model", ["KACE-1-0-G", "IITM-ESM"])
def test_loader_matches_raw_months(cmip, model):
    raw, months = _raw_level(model, 92500.0)
    rows = [months.index((year, month)) for year in (1950, 1987, 2014) for month in (1, 2, 12)]
    loaded = cmip["ta925"].sel(model=model)
    n_points = raw.shape[1]
    for row in rows:
        year, month = months[row]
        step = loaded.sel(time=f"{year:04d}-{month:02d}")
        np.testing.assert_allclose(step.values.ravel()[:n_points], raw[row], rtol=0, atol=1e-4)
    assert loaded.isel(point=slice(n_points, None)).isnull().all()


def test_loader_masks_implausible_values(cmip):
    raw, months = _raw_level("E3SM-1-0", 100000.0)
    in_period = np.array([1950 <= year <= 2014 for year, _ in months])
    bad = (raw[in_period] < 150) | (raw[in_period] > 350)
    assert bad.sum() > 0
    loaded = cmip["ta1000"].sel(model="E3SM-1-0").values[:, : raw.shape[1]]
    np.testing.assert_array_equal(np.isnan(loaded), bad)


def test_predictor_comes_from_925_hpa_only(cmip):
    raw, months = _raw_level("CanESM5", 92500.0)
    early = np.array([1950 <= year <= 1979 for year, _ in months])
    assert float(cmip["ta925_climatology"].sel(model="CanESM5")) == pytest.approx(raw[early].mean(), abs=1e-3)


def test_loader_rejects_unknown_model():
    with pytest.raises(DataError, match="NoSuchModel"):
        load_cross_model(models=["NoSuchModel"])


def test_cross_model_quick_run(cmip):
    raw = yaml.safe_load((configs_dir() / "cross-model.yaml").read_text())
    raw["split"] = {"dim": "model", "labels": True, "train": MODELS[:5], "apply": MODELS[5:]}
    quick = CASES["cross-model"].quick
    config = parse_config({**raw, **{k: {**raw.get(k, {}), **v} for k, v in quick.items()}})
    result = run(config, dataset=cmip)

    table = result.skill["ta1000"]
    assert set(table["method"].values) == {"parent", "child", "pattern_scaling"}
    assert np.isfinite(table["rmse"].values).all()
    assert list(result.predictions["ta1000"]["model"].values) == ["AWI-CM-1-1-MR"]
