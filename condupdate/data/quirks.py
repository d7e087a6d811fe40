"""Clean the quirks of netCDF files from many models and archives before combining them.

Each function takes a Dataset and returns a cleaned Dataset, or raises
:class:`~condupdate._errors.DataError` naming the source, the variable or
coordinate, the bad value and the fix. :func:`~condupdate.data.io.open_dataset`
calls them per file, in the order of :func:`clean_dataset`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import xarray as xr

from condupdate._errors import DataError

__all__ = [
    "check_variable_name",
    "clean_dataset",
    "decode_time",
    "drop_duplicate_times",
    "drop_wrapped_longitude",
    "normalize_longitude",
    "normalize_names",
    "snap_coordinates",
    "squeeze_extra_dims",
    "standardize_coordinates",
    "upcast_float16",
]

logger = logging.getLogger(__name__)

# Names that already count as standard, lower-case, for each target name.
_STANDARD_NAMES = {
    "lat": ("lat", "latitude"),
    "lon": ("lon", "longitude"),
    "time": ("time",),
    "depth": ("depth",),
}
_LATITUDE_UNITS = {"degrees_north", "degree_north", "degrees_n", "degree_n", "degreesn", "degreen"}
_LONGITUDE_UNITS = {"degrees_east", "degree_east", "degrees_e", "degree_e", "degreese", "degreee"}
_DEPTH_UNITS = {"m", "meter", "meters", "metre", "metres", "cm", "km"}


def _attr(var: xr.Variable | xr.DataArray, key: str) -> str:
    # Ferret and some archives write attribute values in upper case.
    value = var.attrs.get(key, var.encoding.get(key, ""))
    return str(value).strip().lower()


def _coordinate_kind(var: xr.DataArray) -> str | None:
    """Return "lat", "lon", "time" or "depth" from CF attributes, or None."""
    axis = _attr(var, "axis")
    standard_name = _attr(var, "standard_name")
    units = _attr(var, "units")
    if standard_name == "latitude" or units in _LATITUDE_UNITS or axis == "y" and units.startswith("degree"):
        return "lat"
    if standard_name == "longitude" or units in _LONGITUDE_UNITS or axis == "x" and units.startswith("degree"):
        return "lon"
    if standard_name == "time" or axis == "t" or " since " in units:
        return "time"
    # A Z axis in pressure or model levels is not a depth, so only a length unit
    # pointing down counts.
    if standard_name == "depth" or axis == "z" and units in _DEPTH_UNITS and _attr(var, "positive") == "down":
        return "depth"
    # Upper-case standard names (Ferret's TIME) count even without CF attributes.
    for kind, names in _STANDARD_NAMES.items():
        if str(var.name).lower() in names:
            return kind
    return None


def standardize_coordinates(ds: xr.Dataset) -> xr.Dataset:
    """Rename non-standard coordinate names to ``lat``, ``lon``, ``time`` and ``depth``.

    A dimension coordinate is renamed when its CF attributes (``axis``,
    ``standard_name`` or ``units`` such as ``degrees_north``, compared without case)
    identify it, for example Ferret's ``LAT``, ``XAXIS`` or ``TIME``. Names that are
    already standard in another case (``LATITUDE``) become lower case, so
    ``latitude`` and ``longitude`` stay as they are. Nothing is renamed for a kind
    with two candidates, or whose target name is taken.

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    xarray.Dataset
        ``ds`` with the unambiguous dimension coordinates renamed.
    """
    candidates: dict[str, list[str]] = {}
    for name in ds.dims:
        if name not in ds.coords:
            continue
        kind = _coordinate_kind(ds[name])
        if kind is not None:
            candidates.setdefault(kind, []).append(str(name))

    renames = {}
    for kind, names in candidates.items():
        if len(names) != 1:
            logger.info("Coordinates %s all look like %r; leaving their names as they are.", names, kind)
            continue
        name = names[0]
        if name in _STANDARD_NAMES[kind]:
            continue
        target = name.lower() if name.lower() in _STANDARD_NAMES[kind] else kind
        if target in ds.variables or target in ds.dims:
            continue
        renames[name] = target
    if renames:
        logger.info("Renaming coordinates %s.", renames)
    return ds.rename(renames)


def decode_time(ds: xr.Dataset, source: str = "dataset") -> xr.Dataset:
    """Decode CF time units to cftime objects in the variable's own calendar.

    ``ds`` must have been opened with ``decode_times=False``. Every calendar that
    cftime supports decodes, and ``months since`` decodes on the 360_day calendar,
    where every month has 30 days.

    Parameters
    ----------
    ds : xarray.Dataset
        Opened with ``decode_times=False``.
    source : str
        File name for error messages.

    Raises
    ------
    DataError
        If the time coordinate has units without a reference date (``"days"``), or
        units that cftime cannot decode, such as ``months since`` on a calendar with
        months of unequal length or a reference year 0 on the standard calendar.
    """
    if "time" in ds.variables and "since" not in _attr(ds["time"], "units") and _attr(ds["time"], "units"):
        units = ds["time"].attrs.get("units")
        raise DataError(
            f"Time coordinate 'time' in {source} has units {units!r} without a reference date; "
            f"set its units to the form 'days since 1850-01-01' (for example with "
            f"ncatted -a units,time,o,c,'days since 1850-01-01' FILE)."
        )

    coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    try:
        return xr.decode_cf(
            ds, decode_times=coder, mask_and_scale=False, concat_characters=False, decode_coords=False
        )
    except ValueError as err:
        # Name the time coordinate's units if it has them, else the first variable's.
        names = ["time", *(str(name) for name in ds.variables if name != "time")]
        timed = [ds[name] for name in names if name in ds.variables and "since" in _attr(ds[name], "units")]
        units = str(timed[0].attrs["units"]) if timed else ""
        calendar = str(timed[0].attrs.get("calendar", "standard")) if timed else "standard"
        if units.lower().startswith(("months since", "years since")):
            hint = (
                f"'{units.split()[0]} since' is ambiguous on the {calendar!r} calendar because its months and "
                "years differ in length; convert the time axis to 'days since' in the file, or set its "
                "calendar to '360_day' if the model uses 30-day months."
            )
        elif re.search(r"since\s+0+-", units):
            hint = (
                "Reference year 0 does not exist in this calendar, as in Ferret climatologies; "
                "open with decode_times=False and assign a time axis, or change the reference date."
            )
        else:
            hint = "Open with decode_times=False and assign the time axis yourself."
        raise DataError(f"Failed to decode time units {units!r} ({calendar!r} calendar) in {source}: {hint}") from err


def _equal_with_nan(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def drop_duplicate_times(ds: xr.Dataset, source: str = "dataset", dim: str = "time") -> xr.Dataset:
    """Drop repeated labels along ``dim`` whose values agree, and sort ``dim``.

    Only the repeated steps are loaded to compare them, so a file without repeats
    stays lazy.

    Raises
    ------
    DataError
        If a repeated label has different values in some variable.
    """
    if dim not in ds.indexes:
        return ds

    index = ds.indexes[dim]
    duplicated = np.asarray(index.duplicated(keep="first"))
    if duplicated.any():
        for label in index[duplicated].unique():
            positions = np.flatnonzero(index == label)
            for name, var in ds.data_vars.items():
                if dim not in var.dims:
                    continue
                steps = var.isel({dim: positions}).values
                first = steps.take(0, axis=var.get_axis_num(dim))
                for k in range(1, len(positions)):
                    if not _equal_with_nan(first, steps.take(k, axis=var.get_axis_num(dim))):
                        what = "Time stamp" if dim == "time" else f"Coordinate {dim!r} value"
                        raise DataError(
                            f"{what} {label} appears {len(positions)} times in {source} with different "
                            f"values of {name!r}; remove the wrong copies or select one file of the overlap."
                        )
        logger.warning(
            "Dropped %d repeated %r labels with identical values from %s.", int(duplicated.sum()), dim, source
        )
        ds = ds.isel({dim: ~duplicated})

    if not ds.indexes[dim].is_monotonic_increasing:
        logger.info("Sorting the unsorted %r axis of %s.", dim, source)
        ds = ds.sortby(dim)
    return ds


def _longitude_name(ds: xr.Dataset) -> str | None:
    for name in ("lon", "longitude"):
        if name in ds.dims and name in ds.coords:
            return name
    return None


def drop_wrapped_longitude(ds: xr.Dataset, source: str = "dataset") -> xr.Dataset:
    """Drop a last longitude column that repeats the first one 360 degrees later.

    Raises
    ------
    DataError
        If the repeated column contains different values from the first.

    Notes
    -----
    The first and last columns are loaded to compare them, but only when the
    longitudes wrap around.
    """
    name = _longitude_name(ds)
    if name is None or ds.sizes[name] < 2:
        return ds

    lon = np.asarray(ds[name].values, dtype=float)
    if not np.isclose(abs(lon[-1] - lon[0]), 360.0, rtol=0, atol=1e-6):
        return ds
    for var_name, var in ds.data_vars.items():
        if name not in var.dims:
            continue
        first = var.isel({name: 0}).values
        last = var.isel({name: -1}).values
        if not _equal_with_nan(first, last):
            raise DataError(
                f"Longitudes {lon[0]} and {lon[-1]} in {source} are the same meridian but {var_name!r} "
                f"differs between them; drop one column, for example with ds.isel({name}=slice(None, -1))."
            )
    logger.info("Dropping the repeated longitude %s of %s.", lon[-1], source)
    return ds.isel({name: slice(None, -1)})


def normalize_longitude(ds: xr.Dataset, convention: str = "0..360") -> xr.Dataset:
    """Wrap longitudes to ``"0..360"`` or ``"-180..180"`` and sort them.

    Parameters
    ----------
    ds : xarray.Dataset
        Has a ``lon`` or ``longitude`` dimension coordinate [degrees_east].
    convention : {"0..360", "-180..180"}
        Target range; 360 maps to 0 and 180 maps to -180.

    Returns
    -------
    xarray.Dataset
        Longitude ascending within the range, attributes kept. A column that lands
        on an existing longitude is dropped when identical.

    Raises
    ------
    DataError
        If ``convention`` is unknown, ``ds`` has no longitude, or two columns that
        land on the same longitude differ.
    """
    if convention not in ("0..360", "-180..180"):
        raise DataError(f"Longitude convention {convention!r} is not supported; use '0..360' or '-180..180'.")
    name = _longitude_name(ds)
    if name is None:
        raise DataError(f"No 'lon' or 'longitude' dimension coordinate found; the dataset has {list(ds.dims)}.")

    lon = ds[name]
    wrapped = lon % 360.0 if convention == "0..360" else (lon + 180.0) % 360.0 - 180.0
    ds = ds.assign_coords({name: wrapped.assign_attrs(lon.attrs)}).sortby(name)
    return drop_duplicate_times(ds, source=f"longitude {convention}", dim=name)


def snap_coordinates(datasets: Sequence[xr.Dataset], tolerance: float = 1e-5) -> list[xr.Dataset]:
    """Give every dataset the first dataset's float coordinates where they agree within ``tolerance``.

    Files written in float32 and float64 differ by rounding (0.1 against
    0.100000001), and combining them would make a union grid with both values.

    Parameters
    ----------
    datasets : sequence of xarray.Dataset
    tolerance : float, default 1e-5
        Largest absolute difference to snap, in the coordinate's unit (degrees for
        latitude and longitude).
    """
    first = datasets[0]
    snapped = [first]
    for ds in datasets[1:]:
        for name in ds.dims:
            if name not in ds.coords or name not in first.coords or first.sizes.get(name) != ds.sizes[name]:
                continue
            ours, theirs = first[name].values, ds[name].values
            if ours.dtype.kind != "f" or theirs.dtype.kind != "f" or np.array_equal(ours, theirs):
                continue
            if np.allclose(ours, theirs, rtol=0.0, atol=tolerance):
                ds = ds.assign_coords({name: first[name].variable})
        snapped.append(ds)
    return snapped


def squeeze_extra_dims(ds: xr.Dataset, keep: Sequence[str] = ()) -> xr.Dataset:
    """Squeeze length-one dimensions to scalar coordinates, except ``keep`` and time, lat, lon."""
    protected = set(keep) | {"time", "lat", "lon", "latitude", "longitude"}
    extra = [d for d, size in ds.sizes.items() if size == 1 and d not in protected]
    if not extra:
        return ds
    logger.info("Squeezing length-one dimensions %s to scalar coordinates.", extra)
    return ds.squeeze(extra)


def upcast_float16(ds: xr.Dataset) -> xr.Dataset:
    """Convert float16 variables to float32, so sums and means keep their precision."""
    names = sorted(str(name) for name, var in ds.variables.items() if var.dtype == np.float16)
    if not names:
        return ds
    logger.info("Converting float16 variables %s to float32.", names)
    for name in names:
        converted = ds[name].astype(np.float32)
        ds = ds.assign_coords({name: converted}) if name in ds.coords else ds.assign({name: converted})
    return ds


def normalize_names(ds: xr.Dataset, source: str = "dataset") -> xr.Dataset:
    """Rename variables and dimensions to the Unicode NFC form of their names.

    The netCDF library stores every name in NFC, so "température" typed with a
    combining accent (NFD, as some macOS tools write it) comes back from a netCDF
    file as another string. With NFC names on both sides, a name from a
    configuration, a zarr store or a file written by condupdate matches the data.

    Raises
    ------
    DataError
        If two names of ``ds`` differ only in their Unicode normalisation.
    """
    names = list(dict.fromkeys(str(name) for name in (*ds.variables, *ds.dims)))
    normalized = [unicodedata.normalize("NFC", name) for name in names]
    renames = {old: new for old, new in zip(names, normalized, strict=True) if old != new}
    if not renames:
        return ds
    clashes = sorted({new for new in normalized if normalized.count(new) > 1})
    if clashes:
        raise DataError(
            f"{source} contains names that differ only in their Unicode normalisation ({clashes}); "
            "rename one of each pair, because netCDF stores both as the same NFC name."
        )
    logger.info("Renaming %s of %s to their Unicode NFC form.", sorted(renames), source)
    return ds.rename(renames)


def check_variable_name(name: str, description: str = "Variable") -> None:
    """Raise :class:`DataError` if a netCDF file cannot store ``name`` as a variable name.

    The netCDF library accepts spaces inside a name and any Unicode letter
    ("air temperature", "température"), but rejects a leading space or
    punctuation mark, trailing whitespace and control characters. A '/' separates
    groups in netCDF4 (HDF5) files and zarr stores, so xarray rejects it when
    writing netCDF, and zarr silently stores ``"a/b"`` as array ``b`` in group ``a``.

    Parameters
    ----------
    name : str
    description : str
        What the error calls the variable, for example ``"Target variable"``.
    """
    import netCDF4

    if "/" in name:
        group, _, base = name.rpartition("/")
        group = group.strip("/")
        where = f"group {group!r}" if group else "the root group"
        setting = f" and set data.group: {group} (group= in open_dataset)" if group else ""
        raise DataError(
            f"{description} {name!r} contains '/', which netCDF4 files and zarr stores read as a group separator, so "
            f"no output file could store it. For variable {base!r} in {where} of the files, name it "
            f"{base!r}{setting}; otherwise rename it in the data and the configuration, for example with "
            f"ds.rename({{{name!r}: {name.strip('/').replace('/', '_')!r}}})."
        )
    hint = f"rename it in the data and the configuration, for example with ds.rename({{{name!r}: 'new_name'}})."
    # The netCDF library is the judge of its own naming rules, so the name is tried
    # on a file that lives in memory only.
    with netCDF4.Dataset("condupdate-name-check.nc", "w", diskless=True, persist=False) as probe:
        try:
            probe.createDimension(name, 1)
        except RuntimeError as err:
            raise DataError(f"{description} {name!r} is not a valid netCDF name ({err}); {hint}") from err


def clean_dataset(ds: xr.Dataset, source: str, decode_times: bool = True) -> xr.Dataset:
    """Apply the per-file cleaning steps to a Dataset opened with ``decode_times=False``."""
    ds = normalize_names(ds, source)
    ds = standardize_coordinates(ds)
    if decode_times:
        ds = decode_time(ds, source)
    ds = upcast_float16(ds)
    ds = drop_duplicate_times(ds, source)
    return drop_wrapped_longitude(ds, source)
