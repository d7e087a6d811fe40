"""Stack gridded fields to a (sample, feature) matrix and back, lazily."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from condupdate._errors import DataError

__all__ = ["stack_samples", "unstack_samples", "valid_samples"]


def stack_samples(
    ds: xr.Dataset,
    variables: Sequence[str],
    sample_dims: Sequence[str],
    dim: str = "feature",
) -> xr.DataArray:
    """Stack variables of ``ds`` into a 2-D ``(sample, dim)`` DataArray without loading it.

    Each variable is broadcast over ``sample_dims`` (a field on ``time`` alone, such
    as a domain mean, is repeated at every grid point), so one sample is one cell
    of the sample dims and one column is one variable. NaN cells stay NaN.

    Parameters
    ----------
    ds : xarray.Dataset
        Holds the variables; dask-backed arrays stay dask-backed.
    variables : sequence of str
        Data variables or coordinates of ``ds``, one column each, in this order.
    sample_dims : sequence of str
        Dimensions that index samples, for example ``("time", "latitude", "longitude")``.
    dim : str, default "feature"
        Name of the column dimension.

    Returns
    -------
    xarray.DataArray
        Dims ``("sample", dim)``; ``sample`` is a MultiIndex over ``sample_dims``
        and ``dim`` is labelled with the variable names.

    Raises
    ------
    DataError
        If a variable or sample dimension is missing, or a variable has a dimension
        that is not a sample dimension.
    """
    sample_dims = list(sample_dims)
    missing_dims = [d for d in sample_dims if d not in ds.dims]
    if missing_dims:
        raise DataError(
            f"Sample dimensions {missing_dims} not found; the dataset has dimensions {list(ds.dims)}."
        )
    columns = []
    for name in variables:
        if name not in ds.variables:
            raise DataError(f"Variable {name!r} not found; the dataset has {sorted(map(str, ds.variables))}.")
        column = ds[name]
        extra = [d for d in column.dims if d not in sample_dims]
        if extra:
            raise DataError(
                f"Variable {name!r} has dimensions {extra} that are not sample dimensions "
                f"{sample_dims}; select a single value along them or add them to 'sample_dims'."
            )
        columns.append(column.reset_coords(drop=True).drop_attrs())

    # Broadcast against a template so a sample dim that no column has still counts.
    template = xr.zeros_like(ds[sample_dims[0]], dtype=float).reset_coords(drop=True)
    for d in sample_dims[1:]:
        template = template + xr.zeros_like(ds[d], dtype=float).reset_coords(drop=True)
    columns = [c.broadcast_like(template).transpose(*sample_dims) for c in columns]

    # Plain unicode labels (not pandas' string dtype) so the coordinate writes to netCDF.
    labels = xr.DataArray(np.asarray(list(variables), dtype=str), dims=dim, name=dim)
    stacked = xr.concat(columns, dim=labels, coords="minimal", compat="override")
    return stacked.stack(sample=sample_dims).transpose("sample", dim).rename(None)


def unstack_samples(stacked: xr.DataArray, sample_dims: Sequence[str] | None = None) -> xr.DataArray:
    """Undo :func:`stack_samples`: unstack ``sample`` back to its dimensions.

    Samples missing from ``stacked`` (for example dropped NaN cells) come back as NaN.
    The sample dims come first, in the order they were stacked, followed by the
    other dims.
    """
    index = stacked.indexes["sample"]
    dims = list(sample_dims) if sample_dims is not None else list(index.names)
    out = stacked.unstack("sample")
    rest = [d for d in out.dims if d not in dims]
    return out.transpose(*dims, *rest)


def valid_samples(stacked: xr.DataArray, dim: str = "feature") -> xr.DataArray:
    """Return a boolean mask over ``sample``: true where every column is finite."""
    return stacked.notnull().all(dim)
