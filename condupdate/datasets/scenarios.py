"""Two emission scenarios of one climate model on one labelled axis, for scenario transfer.

The Met Office Unified Model runs of the SRES A1B and ENSEMBLES E1 scenarios in
``iris-sample-data`` share a grid and a 360_day time axis (annual means
1860-2099), so they cannot be concatenated along ``time``. This loader puts both
runs end to end along the dimension ``scenario_year``, whose labels read
``"A1B-1860"`` ... ``"A1B-2099"``, ``"E1-1860"`` ... ``"E1-2099"``. The labels
sort as strings in this order, so a configuration selects one scenario's years as
an ordinary inclusive range, for example ``split.train: ["E1-1860", "E1-2099"]``
and ``split.apply: ["A1B-2070", "A1B-2099"]``. Non-index coordinates
``scenario`` and ``year`` keep the two parts of each label.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from condupdate.data import open_dataset
from condupdate.jobs.config import resolve_path

__all__ = ["SCENARIO_FILES", "load_scenarios", "stack_scenarios"]

# Scenario name -> iris-sample-data file; A1B sorts before E1, which keeps the labels monotonic.
SCENARIO_FILES = {"A1B": "sample:A1B_north_america.nc", "E1": "sample:E1_north_america.nc"}
DIM = "scenario_year"
_VARIABLE = "air_temperature"


def stack_scenarios(runs: dict[str, xr.DataArray], dim: str = DIM) -> xr.Dataset:
    """Concatenate runs of several scenarios along ``dim``, labelled ``SCENARIO-YEAR``.

    Parameters
    ----------
    runs : dict of str to xarray.DataArray
        One field per scenario, each with a ``time`` dim of annual values (any
        calendar) and identical other coordinates, for example
        ``(time, latitude, longitude)`` air temperature [K].
    dim : str
        Name of the new dimension that replaces ``time``.

    Returns
    -------
    xarray.Dataset
        The fields under their common name on ``(dim, ...)``, ordered by
        scenario name then year, so that the string labels increase
        monotonically; coordinates ``scenario`` (str) and ``year`` (int) along
        ``dim``; the attributes of the first field. Lazy when the fields are.

    Raises
    ------
    ValueError
        If a field lacks ``time``, two fields have different names or grids, or a
        year appears twice within one scenario.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> time = xr.date_range("2000-06-01", periods=2, freq="YS-JUN", calendar="360_day", use_cftime=True)
    >>> field = xr.DataArray(np.zeros((2, 1)), dims=("time", "x"), coords={"time": time}, name="tas")
    >>> stack_scenarios({"E1": field, "A1B": field + 1})["scenario_year"].values.tolist()
    ['A1B-2000', 'A1B-2001', 'E1-2000', 'E1-2001']
    """
    if not runs:
        raise ValueError("runs is empty; give at least one scenario name and its field.")
    names = {str(field.name) for field in runs.values()}
    if len(names) != 1:
        raise ValueError(f"The scenario fields have different names {sorted(names)}; give one variable per scenario.")
    parts = []
    for scenario in sorted(runs):
        field = runs[scenario]
        if "time" not in field.dims:
            raise ValueError(f"Scenario {scenario!r}: field has dims {list(field.dims)} but no 'time'.")
        years = np.array([t.year for t in field["time"].values])
        if len(np.unique(years)) != len(years):
            raise ValueError(f"Scenario {scenario!r}: some years appear twice on its time axis; give annual values.")
        labels = [f"{scenario}-{year:04d}" for year in years]
        # Other coordinates along time (forecast_period, say) describe one run only.
        along_time = [name for name, coord in field.coords.items() if "time" in coord.dims]
        part = field.drop_vars(along_time).rename({"time": dim})
        # Object dtype rather than numpy's fixed-width unicode: stacking samples adds
        # zeros_like of each sample coordinate, which numpy has no loop for on <U8.
        labels = np.asarray(labels, dtype=object)
        parts.append(part.assign_coords({dim: labels, "scenario": (dim, [scenario] * len(years)), "year": (dim, years)}))
    try:
        combined = xr.concat(parts, dim=dim, join="exact", combine_attrs="override")
    except ValueError as err:
        raise ValueError(f"The scenario fields are on different grids ({err}); regrid them to one grid first.") from err
    return combined.to_dataset()


def load_scenarios() -> xr.Dataset:
    """Load the A1B and E1 1.5 m air temperature runs [K] of ``iris-sample-data`` on one ``scenario_year`` axis.

    Both runs come from the Met Office Unified Model 6.05 over North America
    (15-60N, 225-315E), annual means 1860-2099 (UK Open Government Licence). The
    files are opened lazily through :func:`condupdate.data.open_dataset`, so the
    usual input checks apply.

    Returns
    -------
    xarray.Dataset
        ``air_temperature`` on ``(scenario_year, latitude, longitude)``, 480 steps,
        see :func:`stack_scenarios`.
    """
    runs = {name: open_dataset(resolve_path(path))[_VARIABLE] for name, path in SCENARIO_FILES.items()}
    return stack_scenarios(runs)
