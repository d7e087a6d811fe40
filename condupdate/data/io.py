"""Open netCDF files and zarr stores lazily, keeping cftime calendars."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from condupdate._errors import DataError

__all__ = ["open_dataset", "select"]

PathLike = str | os.PathLike


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (
        path.is_dir() and any((path / name).exists() for name in (".zgroup", ".zmetadata", "zarr.json"))
    )


def open_dataset(
    paths: PathLike | Sequence[PathLike],
    chunks: dict[str, int] | str | None = "auto",
    engine: str | None = None,
) -> xr.Dataset:
    """Open one or several netCDF files, or a zarr store, as a dask-backed Dataset.

    Times are always decoded to cftime objects (``use_cftime=True``), so 360_day,
    noleap and other CF calendars keep their calendar and are never converted to
    pandas datetimes.

    Parameters
    ----------
    paths : path or sequence of paths
        A netCDF file, a zarr store (a folder ending in ``.zarr`` or holding zarr
        metadata), or several netCDF files combined by their coordinates.
    chunks : dict, "auto" or None, default "auto"
        Dask chunk sizes per dimension; ``None`` loads eagerly with numpy.
    engine : str, optional
        xarray backend for netCDF files, for example ``"netcdf4"`` or ``"h5netcdf"``.

    Returns
    -------
    xarray.Dataset
        Lazily loaded when ``chunks`` is not None.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    DataError
        If a file exists but cannot be read as netCDF or zarr.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        raise DataError("No input files given; pass at least one netCDF file or zarr store.")
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"Input file {str(path)!r} not found; check the path.")

    time_coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    try:
        if len(paths) == 1 and _is_zarr(paths[0]):
            return xr.open_zarr(paths[0], chunks=chunks, decode_times=time_coder)
        if len(paths) == 1:
            return xr.open_dataset(paths[0], chunks=chunks, engine=engine, decode_times=time_coder)
        return xr.open_mfdataset(
            paths, chunks=chunks, engine=engine, decode_times=time_coder, combine="by_coords"
        )
    except (OSError, ValueError) as err:
        names = ", ".join(repr(str(p)) for p in paths)
        raise DataError(f"Failed to open {names} as netCDF or zarr: {err}") from err


def select(obj: xr.Dataset | xr.DataArray, dim: str, selection: Any) -> xr.Dataset | xr.DataArray:
    """Select a range or a set of labels along ``dim``.

    Parameters
    ----------
    obj : Dataset or DataArray
    dim : str
        Dimension to select along, for example ``"time"``, ``"depth"`` or ``"model"``.
    selection : (start, stop) pair, list of labels, or slice
        A two-element tuple or a slice gives an inclusive range of coordinate values
        (partial date strings such as ``"1860"`` work on cftime axes, and the range
        works on descending coordinates too); a list gives labels.

    Raises
    ------
    DataError
        If ``dim`` is not a dimension of ``obj`` or the selection is empty.
    """
    if dim not in obj.dims:
        raise DataError(f"Dimension {dim!r} not found; the data have dimensions {list(obj.dims)}.")

    if isinstance(selection, tuple) and len(selection) == 2:
        selection = slice(*selection)
    if isinstance(selection, slice):
        index = obj.indexes[dim]
        if isinstance(index, (xr.CFTimeIndex, pd.DatetimeIndex)):
            # A year written without quotes in YAML arrives as an int; on a time axis
            # it means that year, as the partial date string "1860" does.
            selection = slice(*(str(b) if isinstance(b, (int, np.integer)) else b for b in (selection.start, selection.stop)))
        if index.is_monotonic_decreasing and not index.is_monotonic_increasing:
            # Descending axes (latitude 90..-90, pressure) need the bounds reversed.
            selection = slice(selection.stop, selection.start)
        selected = obj.sel({dim: selection})
    else:
        try:
            selected = obj.sel({dim: list(selection)})
        except KeyError as err:
            raise DataError(f"Labels {list(selection)} not all found along {dim!r}: {err}") from err

    if selected.sizes[dim] == 0:
        bounds = (selection.start, selection.stop) if isinstance(selection, slice) else selection
        hint = ""
        if isinstance(selection, slice) and selected.sizes[dim] == 0:
            try:
                if obj.sel({dim: slice(selection.stop, selection.start)}).sizes[dim] > 0:
                    hint = " The range looks reversed; give it as [start, stop]."
            except (KeyError, TypeError, ValueError):
                pass
        raise DataError(
            f"Selection {bounds!r} along {dim!r} is empty; the coordinate runs from "
            f"{obj[dim].values[0]} to {obj[dim].values[-1]}.{hint}"
        )
    return selected
