"""Subsets of the training data and the predictors that describe them.

A subset assignment is a DataArray of string labels named ``subset`` that lies
along one or more sample dimensions (for example one label per year along
``time``). A predictor is a DataArray along sample dimensions too, computed from
inputs or coordinates, or read from an external series; it is never computed
from the targets of the application regime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from condupdate._errors import DataError
from condupdate.data.time import decimal_year

__all__ = [
    "window_subsets",
    "quantile_subsets",
    "label_subsets",
    "domain_mean",
    "coordinate_predictor",
    "external_predictor",
    "subset_predictors",
    "subset_order",
]


def _format(value: object, precision: int = 0) -> str:
    # precision 0 gives the year of a date, 1 the month and 2 the day.
    if hasattr(value, "year") and hasattr(value, "calendar"):
        return [f"{value.year:04d}", f"{value.year:04d}-{value.month:02d}", f"{value.year:04d}-{value.month:02d}-{value.day:02d}"][precision]
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def window_subsets(obj: xr.Dataset | xr.DataArray, dim: str, size: int) -> xr.DataArray:
    """Split ``dim`` into consecutive windows of ``size`` steps (for example decades of annual data).

    A last window shorter than ``size`` is kept as its own subset.

    Parameters
    ----------
    obj : Dataset or DataArray
        The training selection; only its ``dim`` coordinate is read.
    dim : str
        Dimension to cut, for example ``"time"`` or ``"depth"``.
    size : int
        Number of coordinate steps per window, at least 1.

    Returns
    -------
    xarray.DataArray
        Labels such as ``"1860-1869"`` along ``dim``, named ``subset``.
    """
    if dim not in obj.dims:
        raise DataError(f"Subset dimension {dim!r} not found; the data have dimensions {list(obj.dims)}.")
    if int(size) < 1:
        raise ValueError(f"Window size must be at least 1 step along {dim!r}, got {size!r}.")
    values = obj[dim].values
    starts = range(0, len(values), int(size))
    # Label windows by year, or by month or day when windows shorter than a year
    # would otherwise share a label.
    for precision in range(3):
        names = []
        for start in starts:
            stop = min(start + int(size), len(values)) - 1
            first, last = _format(values[start], precision), _format(values[stop], precision)
            names.append(first if first == last else f"{first}-{last}")
        if len(set(names)) == len(names):
            break
    labels = np.repeat(np.asarray(names, dtype=str), int(size))[: len(values)]
    return xr.DataArray(labels, dims=dim, coords={dim: obj[dim]}, name="subset")


def quantile_subsets(predictor: xr.DataArray, n_bins: int) -> xr.DataArray:
    """Bin ``predictor`` into ``n_bins`` subsets of nearly equal size by its quantiles.

    Returns labels ``"q0"``, ``"q1"``, ... on the dims of ``predictor``; NaN
    predictor values get the label ``""`` and belong to no subset.
    """
    if int(n_bins) < 2:
        raise ValueError(f"Quantile binning needs at least 2 bins, got n_bins={n_bins!r}.")
    values = np.asarray(predictor.values, dtype="float64")
    finite = np.isfinite(values)
    if finite.sum() < n_bins:
        raise DataError(
            f"Predictor {predictor.name!r} has {int(finite.sum())} finite values, fewer than n_bins={n_bins}."
        )
    edges = np.quantile(values[finite], np.linspace(0, 1, int(n_bins) + 1))
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, int(n_bins) - 1)
    labels = np.where(finite, np.char.add("q", index.astype(str)), "")
    return xr.DataArray(labels, dims=predictor.dims, coords=predictor.coords, name="subset")


def label_subsets(obj: xr.Dataset | xr.DataArray, dim: str) -> xr.DataArray:
    """Make each value of ``dim`` its own subset (a climate model, a depth level, a scenario)."""
    if dim not in obj.dims:
        raise DataError(f"Subset dimension {dim!r} not found; the data have dimensions {list(obj.dims)}.")
    labels = np.array([_format(v) for v in obj[dim].values], dtype=str)
    return xr.DataArray(labels, dims=dim, coords={dim: obj[dim]}, name="subset")


def subset_order(subsets: xr.DataArray) -> list[str]:
    """Return the subset labels in order of first appearance, without the empty label."""
    flat = np.asarray(subsets.values).ravel()
    _, first = np.unique(flat, return_index=True)
    return [str(flat[i]) for i in sorted(first) if str(flat[i]) != ""]


def domain_mean(field: xr.DataArray, dims: Sequence[str] | None = None, lat: str | None = None) -> xr.DataArray:
    """Area-weighted (cos latitude) mean of ``field`` over its horizontal dims.

    Parameters
    ----------
    field : xarray.DataArray
        For example air temperature ``(time, latitude, longitude)`` [K].
    dims : sequence of str, optional
        Dims to average over; default the latitude dim and every dim named like a
        longitude (``lon``, ``longitude``, ``x``).
    lat : str, optional
        Name of the latitude coordinate; found from names, ``standard_name`` or
        ``units`` when not given.

    Returns
    -------
    xarray.DataArray
        The remaining dims (for example ``time``), ``units`` of ``field``; NaN cells
        are left out of the mean. Lazy when ``field`` is dask-backed.
    """
    from condupdate.skill import latitude_weights

    weights = latitude_weights(field, lat=lat)
    if dims is None:
        dims = [d for d in field.dims if d in weights.dims or d in ("lon", "longitude", "x", "nav_lon")]
    out = field.weighted(weights.fillna(0)).mean(list(dims), skipna=True)
    return out.assign_attrs(units=field.attrs.get("units", ""), long_name=f"domain mean of {field.name}")


def coordinate_predictor(obj: xr.Dataset | xr.DataArray, coord: str) -> xr.DataArray:
    """Use a coordinate as a predictor: depth or pressure as it is, time as a decimal year."""
    if coord not in obj.coords:
        raise DataError(f"Coordinate {coord!r} not found; the data have coordinates {sorted(map(str, obj.coords))}.")
    values = obj[coord]
    if values.dtype == object or np.issubdtype(values.dtype, np.datetime64):
        return decimal_year(values).rename(coord)
    return values.astype("float64").rename(coord)


def external_predictor(series: xr.DataArray, like: xr.Dataset | xr.DataArray, dim: str) -> xr.DataArray:
    """Align an external predictor series on the ``dim`` labels of ``like``, by label only.

    Values are matched by coordinate label, never by position, so a series on
    another time axis or calendar is rejected instead of silently paired.

    Raises
    ------
    DataError
        If ``series`` lacks ``dim`` or some labels of ``like`` are absent from it.
    """
    if dim not in series.dims:
        raise DataError(f"External predictor {series.name!r} has no dimension {dim!r}; it has {list(series.dims)}.")
    try:
        return series.sel({dim: like[dim].values})
    except (KeyError, TypeError) as err:
        raise DataError(
            f"External predictor {series.name!r} lacks some {dim!r} labels of the data "
            f"({like[dim].values[0]} .. {like[dim].values[-1]}), or uses another calendar: {err}"
        ) from err


def subset_predictors(predictor: xr.DataArray, subsets: xr.DataArray) -> xr.DataArray:
    """Average a predictor over each subset.

    Parameters
    ----------
    predictor : xarray.DataArray
        Per-sample predictor, optionally with a ``predictor`` dim for several of them.
    subsets : xarray.DataArray
        Labels from :func:`window_subsets` and friends, on dims shared with ``predictor``.

    Returns
    -------
    xarray.DataArray
        Dims ``(subset,)`` plus ``predictor`` if present, subsets in order of first appearance.
    """
    order = subset_order(subsets)
    per_sample = predictor.isel(predictor=0, drop=True) if "predictor" in predictor.dims else predictor
    labels, _ = xr.broadcast(subsets.reset_coords(drop=True), per_sample)
    predictor, labels = xr.broadcast(predictor, labels.rename("subset"), exclude=["predictor"])
    # Group along one stacked dim: grouping by an N-D label array needs flox.
    sample_dims = list(labels.dims)
    stacked = predictor.stack(_sample=sample_dims)
    stacked_labels = labels.stack(_sample=sample_dims)
    means = stacked.groupby(stacked_labels).mean("_sample", skipna=True)
    return means.sel(subset=order)
