"""Arctic lower-troposphere temperature from 42 CMIP6 models, one model per domain.

The data are monthly air temperature ``ta`` of the CMIP6 historical runs
(r1i1p1f1) at 1000 and 925 hPa, a few grid points near the North Pole per model,
from the PyPI package ``esmvaltool-sample-data`` (CMIP6 data, CC BY-SA 4.0).
Install it without its dependencies, because its ``__init__`` imports iris::

    pip install --no-deps esmvaltool-sample-data

The files are found without importing the package.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cftime
import numpy as np
import xarray as xr

from condupdate._errors import DataError
from condupdate.data import open_dataset

__all__ = ["PERIOD", "CLIMATOLOGY_PERIOD", "cmip6_files", "load_cross_model", "sample_data_root"]

logger = logging.getLogger(__name__)

PERIOD = ("1950", "2014")  # months common to every model of the sample data
CLIMATOLOGY_PERIOD = ("1950", "1979")  # the period of each model's own predictor climatology
# Air temperature at 1000 or 925 hPa lies within these bounds [K] wherever it is
# physical. The sample files have no _FillValue attribute, so below-ground cells
# hold netCDF's default fill 9.97e36, and E3SM writes values of 15-145 K there.
PLAUSIBLE_TA = (150.0, 350.0)
LEVELS = {"ta1000": 100000.0, "ta925": 92500.0}  # [Pa]
_FILE_PATTERN = "data/timeseries/CMIP6/CMIP/*/*/historical/r1i1p1f1/Amon/ta/*/*/*.nc"


def sample_data_root() -> Path:
    """Return the folder of the installed ``esmvaltool_sample_data`` package without importing it.

    Raises
    ------
    ModuleNotFoundError
        If the package is not installed.
    """
    spec = importlib.util.find_spec("esmvaltool_sample_data")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The CMIP6 sample data package esmvaltool-sample-data is not installed; install it without its "
            "dependencies: pip install --no-deps esmvaltool-sample-data"
        )
    return Path(list(spec.submodule_search_locations)[0])


def cmip6_files(root: str | os.PathLike | None = None) -> dict[str, list[Path]]:
    """List the monthly ``ta`` files of the sample data, by model name.

    The model name is the folder ``.../CMIP/<institute>/<model>/historical/...``.
    """
    root = Path(root) if root is not None else sample_data_root()
    files: dict[str, list[Path]] = {}
    for path in sorted(root.glob(_FILE_PATTERN)):
        model = path.relative_to(root).parts[5]
        files.setdefault(model, []).append(path)
    if not files:
        raise DataError(f"No monthly ta files of CMIP6 historical runs found under {str(root)!r} (pattern {_FILE_PATTERN}).")
    return files


def _month_axis(start: str, stop: str) -> np.ndarray:
    # Models use noleap, 360_day, julian, standard and proleptic_gregorian calendars,
    # so months are matched by (year, month) and relabelled onto one axis on the
    # proleptic_gregorian calendar, on day 15 of each month.
    years = range(int(start), int(stop) + 1)
    return np.array([cftime.DatetimeProlepticGregorian(y, m, 15) for y in years for m in range(1, 13)], dtype=object)


def _one_model(model: str, paths: Sequence[Path], months: np.ndarray) -> xr.Dataset:
    source = f"{model} ({len(paths)} files under {paths[0].parent})"
    ds = open_dataset(paths, chunks=None)
    if "ta" not in ds.data_vars:
        raise DataError(f"Model {source}: variable 'ta' not found; the files contain {sorted(map(str, ds.data_vars))}.")
    ta = ds["ta"].sel(time=slice(*PERIOD))

    # (year, month) labels, the same on every calendar.
    keys = [(t.year, t.month) for t in ta["time"].values]
    if len(set(keys)) != len(keys) or len(keys) != len(months):
        raise DataError(
            f"Model {source}: expected {len(months)} distinct months in {PERIOD[0]}-{PERIOD[1]}, "
            f"got {len(keys)} time steps with {len(set(keys))} distinct months."
        )
    ta = ta.assign_coords(time=months)

    # Plausible values only; below-ground cells become NaN.
    low, high = PLAUSIBLE_TA
    implausible = int(((ta < low) | (ta > high)).sum())
    if implausible:
        logger.info("%s: %d values of ta outside %g..%g K set to NaN (below ground).", model, implausible, low, high)
    ta = ta.where((ta >= low) & (ta <= high))

    # Grid points, ordered by latitude then longitude, along one 'point' dim.
    ta = ta.stack(point=("lat", "lon")).sortby("point")
    lat = ta["lat"].values.astype("float64")
    lon = ta["lon"].values.astype("float64")
    ta = ta.drop_vars(["point", "lat", "lon"]).assign_coords(point=np.arange(ta.sizes["point"]))

    fields = {}
    for name, level in LEVELS.items():
        try:
            fields[name] = ta.sel(plev=level, method="nearest", tolerance=1.0).drop_vars("plev")
        except KeyError as err:
            raise DataError(f"Model {source}: pressure level {level:g} Pa not found; plev is {ta['plev'].values}.") from err
    out = xr.Dataset(fields)
    out["lat"] = ("point", lat)
    out["lon"] = ("point", lon)
    return out


def _season(months: np.ndarray) -> tuple[xr.DataArray, xr.DataArray]:
    # Month of the year as a point on the unit circle, so December and January are neighbours.
    angle = 2.0 * np.pi * (np.array([t.month for t in months]) - 0.5) / 12.0
    cos = xr.DataArray(np.cos(angle), dims="time", attrs={"long_name": "cosine of the month of the year", "units": "1"})
    sin = xr.DataArray(np.sin(angle), dims="time", attrs={"long_name": "sine of the month of the year", "units": "1"})
    return cos, sin


def load_cross_model(root: str | os.PathLike | None = None, models: Sequence[str] | None = None) -> xr.Dataset:
    """Load 1000 and 925 hPa Arctic air temperature of CMIP6 models onto one Dataset.

    Parameters
    ----------
    root : path, optional
        Folder of the ``esmvaltool_sample_data`` package; found without importing
        it when not given.
    models : sequence of str, optional
        Model names to load (default all 42), for example ``["CanESM5", "MIROC6"]``.

    Returns
    -------
    xarray.Dataset
        Dims ``(model, time, point)``: ``model`` labels, 780 months 1950-01..2014-12
        relabelled by year and month onto the proleptic_gregorian calendar (day 15),
        and grid points near the North Pole (4 to 9 per model, padded with NaN).
        Variables:

        - ``ta1000``, ``ta925`` (model, time, point): air temperature [K] at 1000
          and 925 hPa; NaN below ground and at padded points;
        - ``lat``, ``lon`` (model, point): position of each grid point [degrees];
        - ``season_cos``, ``season_sin`` (time): month of the year on the unit circle;
        - ``ta925_climatology`` (model): the model's own 1950-1979 mean of ``ta925``
          over its points [K];
        - ``ta925_seasonal_range`` (model): the range of the model's 1950-1979 mean
          seasonal cycle of ``ta925`` over its points [K].

        Both per-model values come from 925 hPa, an input, never from the target
        level, so they can describe a model that has no target data.

    Raises
    ------
    ModuleNotFoundError
        If esmvaltool-sample-data is not installed.
    DataError
        If a model lacks a month of 1950-2014 or a pressure level.
    """
    files = cmip6_files(root)
    if models is not None:
        unknown = sorted(set(models) - set(files))
        if unknown:
            raise DataError(f"Models {unknown} not found in the sample data; known models: {sorted(files)}.")
        files = {m: files[m] for m in models}

    months = _month_axis(*PERIOD)
    per_model = [_one_model(model, paths, months) for model, paths in files.items()]
    n_points = max(ds.sizes["point"] for ds in per_model)
    padded = [ds.reindex(point=np.arange(n_points)) for ds in per_model]
    # NOTE: model labels are Python str objects (object dtype, as netCDF4 returns
    # variable-length strings), because condupdate.data.stack_samples cannot yet
    # broadcast a fixed-width unicode coordinate against numeric ones.
    labels = xr.DataArray(np.array(list(files), dtype=object), dims="model", name="model")
    ds = xr.concat(padded, dim=labels, join="exact")
    ds["model"].attrs = {"long_name": "CMIP6 source_id of the climate model"}
    ds["time"].attrs = {"long_name": "month (year and month of each model's own calendar)"}

    for name, level in LEVELS.items():
        ds[name].attrs = {
            "standard_name": "air_temperature",
            "long_name": f"air temperature at {level / 100:g} hPa",
            "units": "K",
        }
    ds["lat"].attrs = {"standard_name": "latitude", "units": "degrees_north"}
    ds["lon"].attrs = {"standard_name": "longitude", "units": "degrees_east"}
    ds["season_cos"], ds["season_sin"] = _season(months)

    early = ds["ta925"].sel(time=slice(*CLIMATOLOGY_PERIOD))
    ds["ta925_climatology"] = early.mean(("time", "point")).assign_attrs(
        long_name=f"mean air temperature at 925 hPa, {CLIMATOLOGY_PERIOD[0]}-{CLIMATOLOGY_PERIOD[1]}", units="K"
    )
    cycle = early.groupby("time.month").mean("time").mean("point")
    ds["ta925_seasonal_range"] = (cycle.max("month") - cycle.min("month")).assign_attrs(
        long_name=f"range of the mean seasonal cycle of air temperature at 925 hPa, "
        f"{CLIMATOLOGY_PERIOD[0]}-{CLIMATOLOGY_PERIOD[1]}",
        units="K",
    )
    ds.attrs = {
        "title": "CMIP6 historical air temperature at 1000 and 925 hPa near the North Pole",
        "source": "esmvaltool-sample-data (PyPI), CMIP6 CMIP historical r1i1p1f1 Amon ta",
        "license": "CC BY-SA 4.0",
    }
    return ds
