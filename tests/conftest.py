"""Shared fixtures: tiny seeded temperature fields on cftime calendars, written to tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

# The tests use small matrices, where BLAS threads gain nothing and contend with
# torch's threads for the cores; one BLAS thread keeps the suite's run time steady.
_BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")
import xarray as xr

# Grid-cell centres [degrees], a 6 x 8 grid that avoids the poles.
LATITUDE = np.array([-62.5, -37.5, -12.5, 12.5, 37.5, 62.5])
LONGITUDE = np.arange(8) * 45.0 + 22.5

# Land cells as (latitude index, longitude index) pairs, NaN at every time step.
LAND_CELLS = [(3, 2), (3, 3), (3, 4), (4, 3), (1, 6)]

# Ocean cells that are missing at a few time indices only (for example under sea ice).
GAPS = {(0, 0): [2, 3], (5, 7): [11], (2, 5): [25], (4, 1): [33, 34]}


def _land_mask(descending_latitude: bool = False) -> xr.DataArray:
    mask = np.zeros((LATITUDE.size, LONGITUDE.size), dtype=bool)
    for i, j in LAND_CELLS:
        mask[i, j] = True
    latitude = LATITUDE
    if descending_latitude:
        mask, latitude = mask[::-1], latitude[::-1]
    return xr.DataArray(
        mask, dims=("latitude", "longitude"), coords={"latitude": latitude, "longitude": LONGITUDE}
    )


def _temperature_dataset(
    calendar: str = "360_day",
    n_years: int = 40,
    start_year: int = 1860,
    masked: bool = True,
    descending_latitude: bool = False,
    seed: int = 0,
) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    years = np.arange(start_year, start_year + n_years)
    # Mid-year time stamps, as in annual-mean climate model output. date_range gives
    # the calendar's own cftime class (Datetime360Day, DatetimeNoLeap), as decoding a
    # file does. With generic cftime.datetime objects, xarray 2026.9 parses partial
    # date strings in the standard calendar and sel raises TypeError.
    times = xr.date_range(
        f"{start_year:04d}-07-01", periods=n_years, freq="YS-JUL", calendar=calendar, use_cftime=True
    )

    # Air temperature [K]: a meridional gradient, a zonal wave, a warming trend of
    # 0.03 K per year that speeds up after 40 years, and weather noise.
    lat = np.deg2rad(LATITUDE)[None, :, None]
    lon = np.deg2rad(LONGITUDE)[None, None, :]
    elapsed = (years - start_year)[:, None, None].astype(float)
    warming = 0.03 * elapsed + 0.002 * np.maximum(elapsed - 40.0, 0.0) ** 2
    values = 300.0 - 35.0 * np.sin(lat) ** 2 + 2.0 * np.cos(lon) + warming
    values = values + 0.3 * rng.standard_normal((n_years, LATITUDE.size, LONGITUDE.size))

    if masked:
        for i, j in LAND_CELLS:
            values[:, i, j] = np.nan
        for (i, j), steps in GAPS.items():
            values[[s for s in steps if s < n_years], i, j] = np.nan

    latitude = LATITUDE
    if descending_latitude:
        values, latitude = values[:, ::-1, :], latitude[::-1]

    return xr.Dataset(
        {
            "air_temperature": (
                ("time", "latitude", "longitude"),
                values,
                {"standard_name": "air_temperature", "units": "K"},
            )
        },
        coords={
            "time": ("time", times, {"standard_name": "time"}),
            "latitude": ("latitude", latitude, {"standard_name": "latitude", "units": "degrees_north"}),
            "longitude": ("longitude", LONGITUDE, {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={"title": "condupdate test field", "source": "tests/conftest.py, seeded synthetic data"},
    )


def _write_netcdf(ds: xr.Dataset, path: Path) -> Path:
    # Encode time in days since the start of the first year, on the data's own calendar.
    calendar = ds.time.values[0].calendar
    first_year = ds.time.values[0].year
    encoding = {"time": {"units": f"days since {first_year:04d}-01-01", "calendar": calendar}}
    ds.to_netcdf(path, encoding=encoding)
    return path


@pytest.fixture(scope="session")
def temperature_dataset() -> Callable[..., xr.Dataset]:
    """Build an in-memory air temperature field (time, latitude, longitude) [K]."""
    return _temperature_dataset


@pytest.fixture(scope="session")
def land_mask() -> Callable[..., xr.DataArray]:
    """Build the (latitude, longitude) boolean mask of the cells that are NaN at all times."""
    return _land_mask


@pytest.fixture(scope="session")
def write_netcdf() -> Callable[[xr.Dataset, Path], Path]:
    """Write a dataset to a netCDF file with CF time encoding and return the path."""
    return _write_netcdf


@pytest.fixture
def temperature_file(tmp_path: Path) -> Path:
    """A masked 360_day field of 40 years from 1860, as a netCDF file."""
    return _write_netcdf(_temperature_dataset(), tmp_path / "air_temperature.nc")


def _run_config(paths: list[Path | str]) -> dict[str, Any]:
    # Train on 1860-1889 (six 5-year subsets) and apply to 1890-1899.
    return {
        "name": "tiny",
        "data": {
            "paths": [str(p) for p in paths],
            "targets": ["air_temperature"],
            "sample_dims": ["time", "latitude", "longitude"],
            "inputs": [
                {
                    "name": "domain_mean_temperature",
                    "variable": "air_temperature",
                    "transform": "domain_mean",
                    "feature": False,
                },
                {"name": "training_climatology", "variable": "air_temperature", "transform": "training_mean"},
                {"name": "latitude", "coordinate": "latitude"},
                {"name": "longitude", "coordinate": "longitude"},
            ],
        },
        "split": {"dim": "time", "train": ["1860", "1889"], "apply": ["1890", "1899"]},
        "subsets": {"method": "window", "dim": "time", "size": 5},
        "predictors": [{"input": "domain_mean_temperature"}],
        "emulator": {"width": 8, "depth": 1, "activation": "tanh"},
        "training": {"epochs": 4, "batch_size": 128, "learning_rate": 0.01, "patience": 2, "seed": 0},
        "finetune": {"epochs": 2, "batch_size": 128, "learning_rate": 0.001, "patience": 2, "seed": 0},
        "regressor": {"method": "ridge"},
    }


@pytest.fixture(scope="session")
def run_config() -> Callable[[list[Path | str]], dict[str, Any]]:
    """Build a raw configuration mapping for a tiny run on the given files."""
    return _run_config


class ComputeCounter:
    """A dask scheduler that counts how often a graph is computed."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, dsk, keys, **kwargs):
        self.count += 1
        return dask.get(dsk, keys, **kwargs)


@pytest.fixture
def compute_counter():
    """Route dask computations through a counting scheduler for the test's duration."""
    counter = ComputeCounter()
    with dask.config.set(scheduler=counter):
        yield counter
