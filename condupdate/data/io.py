"""Open netCDF files and zarr stores lazily, keeping cftime calendars."""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from condupdate._errors import DataError
from condupdate.data import quirks

__all__ = ["find_variable_groups", "list_groups", "open_dataset", "select"]

PathLike = str | os.PathLike

logger = logging.getLogger(__name__)


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (
        path.is_dir() and any((path / name).exists() for name in (".zgroup", ".zmetadata", "zarr.json"))
    )


def _open_group(path: Path, chunks: dict[str, int] | str | None, engine: str | None, group: str | None) -> xr.Dataset:
    # Times are decoded later, by quirks.decode_time, so a failure can name the
    # file and the fix.
    if _is_zarr(path):
        return xr.open_zarr(path, group=group, chunks=chunks, decode_times=False)
    return xr.open_dataset(path, group=group, chunks=chunks, engine=engine, decode_times=False)


def _open_one(path: Path, chunks: dict[str, int] | str | None, engine: str | None, group: str | None) -> xr.Dataset:
    group = _group_path(group)
    try:
        ds = _open_group(path, chunks, engine, None if group == "/" else group)
    except (OSError, ValueError, LookupError) as err:
        groups = list_groups(path) if group != "/" else []
        if group != "/" and group not in groups:
            raise DataError(
                f"Group {group!r} not found in {str(path)!r}, which has the groups {groups}; set group "
                "(data.group in a configuration) to one of them, or leave it unset for the root group."
            ) from err
        raise DataError(f"Failed to open {str(path)!r} as netCDF or zarr: {err}") from err
    if group == "/":
        return ds
    return _inherit_coordinates(ds, path, chunks, engine, group)


def _group_path(group: str | None) -> str:
    # "forecast", "forecast/" and "/forecast" name the same group; None and "" the root.
    if group is None or not group.strip("/"):
        return "/"
    return "/" + group.strip("/")


def _inherit_coordinates(
    ds: xr.Dataset, path: Path, chunks: dict[str, int] | str | None, engine: str | None, group: str
) -> xr.Dataset:
    # A netCDF4 group inherits the dimensions of its parent groups, but xarray opens
    # the group alone, so a dimension defined in a parent comes without its
    # coordinate variable. The nearest parent that contains one supplies it, as the
    # netCDF data model resolves an inherited dimension in the nearest enclosing group.
    missing = [str(d) for d in ds.dims if d not in ds.variables]
    parts = group.strip("/").split("/")
    parents = ["/".join(parts[:k]) or None for k in range(len(parts) - 1, -1, -1)]
    for parent in parents:
        if not missing:
            break
        with _open_group(path, chunks, engine, parent) as above:
            found = {
                name: above[name].variable
                for name in missing
                if name in above.variables and above[name].dims == (name,) and above.sizes[name] == ds.sizes[name]
            }
        if found:
            logger.info("Taking coordinates %s of group %r in %s from its parent groups.", sorted(found), group, str(path))
            ds = ds.assign_coords(found)
            missing = [name for name in missing if name not in found]
    return ds


def list_groups(path: PathLike) -> list[str]:
    """List the groups of a netCDF4 file or zarr store, as paths from ``"/"``.

    Parameters
    ----------
    path : path
        A netCDF file or a zarr store. A netCDF3 file has only the root group.

    Returns
    -------
    list of str
        ``["/", "/forecast", "/forecast/surface", ...]``, parents before children.
    """
    return [str(name) for name in _variables_by_group(Path(path))]


def _variables_by_group(path: Path) -> dict[str, list[str]]:
    # Only metadata is read. xarray's open_groups would decode every group, and
    # fail on a group it cannot decode although the caller needs only the names.
    if _is_zarr(path):
        import zarr

        root = zarr.open_group(str(path), mode="r")
        found = {"/": sorted(name for name, _ in root.arrays())}
        for name, group in root.groups():
            for sub, members in _zarr_groups(group, "/" + name).items():
                found[sub] = members
        return found
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            return _netcdf_groups(nc)
    except OSError:
        return {}


def _netcdf_groups(group) -> dict[str, list[str]]:
    found = {group.path: list(group.variables)}
    for child in group.groups.values():
        found.update(_netcdf_groups(child))
    return found


def _zarr_groups(group, path: str) -> dict[str, list[str]]:
    found = {path: sorted(name for name, _ in group.arrays())}
    for name, child in group.groups():
        found.update(_zarr_groups(child, f"{path}/{name}"))
    return found


def find_variable_groups(paths: PathLike | Sequence[PathLike], name: str) -> dict[str, list[str]]:
    """Find the groups that contain a variable, in each of several netCDF4 files or zarr stores.

    Parameters
    ----------
    paths : path or sequence of paths
    name : str
        Variable name, compared after Unicode NFC normalisation, as netCDF stores names.

    Returns
    -------
    dict
        File path to the list of groups (``"/"`` for the root group) that contain
        ``name``. Files without it are left out.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    normalized = unicodedata.normalize("NFC", name)
    found = {}
    for path in paths:
        groups = [
            group
            for group, names in _variables_by_group(Path(path)).items()
            if normalized in (unicodedata.normalize("NFC", n) for n in names)
        ]
        if groups:
            found[str(path)] = groups
    return found


def _concat_overlapping_times(datasets: list[xr.Dataset], names: str, err: ValueError) -> xr.Dataset:
    # combine_by_coords rejects files whose time ranges overlap, as when a run was
    # restarted, so they are concatenated in order of their first time stamp and the
    # caller drops the repeated steps.
    if not all("time" in ds.indexes and ds.sizes["time"] > 0 for ds in datasets):
        raise DataError(f"Failed to combine {names} by their coordinates: {err}") from err
    ordered = sorted(datasets, key=lambda ds: ds.indexes["time"][0])
    try:
        combined = xr.concat(
            ordered,
            dim="time",
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="exact",
            combine_attrs="drop_conflicts",
        )
    except ValueError as concat_err:
        raise DataError(
            f"Failed to combine {names} by their coordinates ({err}) or along time ({concat_err}); "
            "check that the files share one grid."
        ) from concat_err
    return combined


def open_dataset(
    paths: PathLike | Sequence[PathLike],
    chunks: dict[str, int] | str | None = "auto",
    engine: str | None = None,
    decode_times: bool = True,
    keep_dims: Sequence[str] = (),
    group: str | None = None,
) -> xr.Dataset:
    """Open one or several netCDF files, or a zarr store, as a dask-backed Dataset.

    Times are decoded to cftime objects, so 360_day, noleap and other CF calendars
    keep their calendar and are never converted to pandas datetimes. Each file is
    cleaned before combining (see :mod:`condupdate.data.quirks`):

    - dimension coordinates named by CF attributes only (Ferret's ``LAT``,
      ``XAXIS``, ``TIME``) are renamed to ``lat``, ``lon``, ``time``, ``depth``;
    - float16 variables become float32;
    - repeated time stamps with identical values are dropped (with a logged
      warning) and the time axis is sorted, within a file and across files that
      overlap in time;
    - a last longitude column repeating the first 360 degrees later is dropped;
    - variable names become Unicode NFC, the form netCDF stores names in.

    Several files are then combined by their coordinates, after float coordinates
    that agree with the first file's within 1e-5 are set to the first file's
    values. Length-one dimensions other than time, lat, lon and ``keep_dims`` are
    squeezed to scalar coordinates.

    Parameters
    ----------
    paths : path or sequence of paths
        A netCDF file, a zarr store (a folder ending in ``.zarr`` or holding zarr
        metadata), or several netCDF files combined by their coordinates.
    chunks : dict, "auto" or None, default "auto"
        Dask chunk sizes per dimension; ``None`` loads eagerly with numpy.
    engine : str, optional
        xarray backend for netCDF files, for example ``"netcdf4"`` or ``"h5netcdf"``.
    decode_times : bool, default True
        False keeps time as numbers, for files whose time units cftime cannot decode.
    keep_dims : sequence of str, default ()
        Length-one dimensions to keep, for example a sample dimension ``member``.
    group : str, optional
        netCDF4 or zarr group to open in every file, for example ``"forecast"`` or
        ``"forecast/surface"``; the root group by default. Coordinates of
        dimensions that the group inherits from a parent group are taken from
        that parent. :func:`find_variable_groups` returns the groups that contain a variable.

    Returns
    -------
    xarray.Dataset
        Lazily loaded when ``chunks`` is not None.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    DataError
        If a file exists but cannot be read as netCDF or zarr, lacks ``group``, its
        time units cannot be decoded, or repeated time stamps or longitudes hold
        different values.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        raise DataError("No input files given; pass at least one netCDF file or zarr store.")
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"Input file {str(path)!r} not found; check the path.")

    datasets = [
        quirks.clean_dataset(_open_one(path, chunks, engine, group), repr(str(path)), decode_times=decode_times)
        for path in paths
    ]

    if len(datasets) == 1:
        ds = datasets[0]
    else:
        datasets = quirks.snap_coordinates(datasets)
        names = ", ".join(repr(str(p)) for p in paths)
        try:
            # data_vars="all" is xarray's present default, named so that its
            # announced change does not alter how files are combined.
            ds = xr.combine_by_coords(datasets, data_vars="all", combine_attrs="drop_conflicts")
        except ValueError as err:
            ds = _concat_overlapping_times(datasets, names, err)
        # combine_by_coords accepts files that share their boundary time stamp.
        ds = quirks.drop_duplicate_times(ds, names)
    return quirks.squeeze_extra_dims(ds, keep=keep_dims)


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
