"""Diagnostic figures: error versus extrapolation distance, and error maps.

Each function draws on the given axes or on a new ``matplotlib.figure.Figure``
that is not registered with pyplot, so figures made in a loop need no closing
and no display is required. Each returns the Figure and never shows it.
Plotting needs the values, so lazy (dask-backed) inputs are computed here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from condupdate._errors import DataError
from condupdate._io import atomic_path
from condupdate.skill import latitude_weights

__all__ = ["error_maps", "error_vs_distance", "save_figure"]


def error_vs_distance(
    distance: xr.DataArray,
    errors: Mapping[str, xr.DataArray],
    ax: Axes | None = None,
    units: str | None = None,
) -> Figure:
    """Plot each method's error against the extrapolation distance.

    Parameters
    ----------
    distance : xarray.DataArray
        Extrapolation distance [1] on one dim, for example one value per
        application year, as returned by
        :func:`condupdate.skill.extrapolation_distance`.
    errors : mapping of str to xarray.DataArray
        RMSE of each method on the dim and coordinate of ``distance``, for example
        the area-weighted RMSE per year [K].
    ax : matplotlib.axes.Axes, optional
        Axes to draw on. By default a new figure is made.
    units : str, optional
        Units of the errors for the y label. By default the ``units`` attr of the
        first error.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with one marker series per method, in mapping order.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> distance = xr.DataArray([0.0, 0.5, 1.5], dims="time")
    >>> errors = {"parent": xr.DataArray([0.2, 0.6, 1.4], dims="time", attrs={"units": "K"})}
    >>> fig = error_vs_distance(distance, errors)
    >>> fig.axes[0].get_ylabel()
    'RMSE [K]'
    """
    if not isinstance(distance, xr.DataArray) or distance.ndim != 1:
        raise DataError(
            f"distance must be a 1-D DataArray, got {type(distance).__name__} with dims "
            f"{list(getattr(distance, 'dims', []))}."
        )
    _check_not_empty(errors)
    (dim,) = distance.dims
    for name, error in errors.items():
        if not isinstance(error, xr.DataArray) or error.dims != (dim,):
            raise DataError(
                f"errors[{name!r}] must be a 1-D DataArray on dim {dim!r} like distance, got dims "
                f"{list(getattr(error, 'dims', []))}."
            )
        try:
            xr.align(distance, error, join="exact")
        except ValueError as err:
            raise DataError(
                f"errors[{name!r}] and distance have different {dim!r} coordinates ({err}). "
                "Give both on the same application samples."
            ) from err
    if units is None:
        units = next(iter(errors.values())).attrs.get("units")

    fig, ax = _figure_and_axes(ax)
    x = np.asarray(distance.values)
    for name, error in errors.items():
        # Markers without lines, because the samples need not be ordered by distance.
        ax.plot(x, np.asarray(error.values), marker="o", linestyle="none", label=name)

    ax.set_xlabel("Distance beyond the training range (training standard deviations)")
    ax.set_ylabel("RMSE" if units is None else f"RMSE [{units}]")
    ax.set_title("Error versus extrapolation distance")
    ax.legend()
    return fig


def error_maps(
    errors: Mapping[str, xr.DataArray],
    ax: Sequence[Axes] | None = None,
    units: str | None = None,
    cmap: str = "viridis",
    symmetric: bool = False,
) -> Figure:
    """Map each method's error on latitude-longitude axes with one colour scale.

    Parameters
    ----------
    errors : mapping of str to xarray.DataArray
        Error field of each method on two dims, latitude and longitude, for
        example the time-mean absolute error [K]. The latitude coordinate is
        found as in :func:`condupdate.skill.latitude_weights`.
    ax : sequence of matplotlib.axes.Axes, optional
        One axes per method, in mapping order. By default a new figure with one
        row of panels is made.
    units : str, optional
        Units for the colorbar label and panel titles. By default the ``units``
        attr of the first error.
    cmap : str, default "viridis"
        Matplotlib colormap name; use a diverging one such as ``"RdBu_r"`` with
        ``symmetric=True`` for signed errors.
    symmetric : bool, default False
        Centre the colour scale on zero (limits at plus and minus the largest
        absolute value), for signed errors such as the bias.

    Returns
    -------
    matplotlib.figure.Figure
        The figure. All panels share one colour scale, spanning the minimum to
        maximum over every panel, and one colorbar. Each panel title gives the
        method name and the area-weighted (cos-latitude) mean over valid cells.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> coords = {"lat": [-45.0, 0.0, 45.0], "lon": [0.0, 90.0, 180.0, 270.0]}
    >>> error = xr.DataArray(rng.random((3, 4)), dims=("lat", "lon"), coords=coords)
    >>> fig = error_maps({"parent": error, "child": error / 2})
    >>> len(fig.axes)  # two panels and the colorbar
    3
    """
    _check_not_empty(errors)
    fields = {name: _map_field(name, error) for name, error in errors.items()}
    if units is None:
        units = next(iter(errors.values())).attrs.get("units")

    if ax is None:
        fig = Figure(figsize=(4.5 * len(fields), 3.6), layout="constrained")
        axes = list(fig.subplots(1, len(fields), squeeze=False)[0])
    else:
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) != len(fields):
            raise ValueError(
                f"ax has {len(axes)} axes but errors has {len(fields)} methods. Give one axes per method."
            )
        fig = axes[0].figure

    # One Normalize instance for all panels, so equal colours mean equal errors.
    values = {name: np.asarray(field.values, dtype=float) for name, field in fields.items()}
    finite = np.concatenate([array[np.isfinite(array)] for array in values.values()])
    if finite.size and symmetric:
        limit = float(np.abs(finite).max()) or 1.0
        norm = matplotlib.colors.Normalize(vmin=-limit, vmax=limit)
    elif finite.size:
        norm = matplotlib.colors.Normalize(vmin=finite.min(), vmax=finite.max())
    else:
        # Every cell is NaN, so any limits would do, and these keep the colorbar valid.
        norm = matplotlib.colors.Normalize(vmin=0.0, vmax=1.0)

    mesh = None
    for panel, (name, field) in zip(axes, fields.items()):
        lat_name, lon_name = field.dims
        mesh = panel.pcolormesh(
            _coordinate_values(field, lon_name),
            _coordinate_values(field, lat_name),
            values[name],
            cmap=cmap,
            norm=norm,
            shading="nearest",
        )
        area_mean = float(field.weighted(latitude_weights(field)).mean(skipna=True))
        suffix = "" if units is None else f" {units}"
        panel.set_title(f"{name}\narea mean {area_mean:.3g}{suffix}")
        panel.set_xlabel(_axis_label(field, lon_name))
        panel.set_ylabel(_axis_label(field, lat_name))

    fig.colorbar(mesh, ax=axes, label=units if units is not None else "error")
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG file atomically and close it in pyplot.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        Figure to write.
    path : str or os.PathLike
        Destination, ending in ``.png``.
    dpi : int, default 120
        Resolution [dots per inch].

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_figure writes PNG files, so path must end in '.png', got {str(path)!r}.")

    with atomic_path(path) as tmp:
        # The temporary name ends in .tmp, so the format cannot come from it.
        fig.savefig(tmp, format="png", dpi=dpi)
    # pyplot keeps the figures it made until they are closed. For other figures
    # plt.close does nothing.
    plt.close(fig)
    return path


def _check_not_empty(errors: Mapping[str, xr.DataArray]) -> None:
    if not isinstance(errors, Mapping):
        raise TypeError(f"errors must be a mapping of method name to DataArray, got {type(errors).__name__}.")
    if not errors:
        raise ValueError("errors is empty. Give at least one method name and its error.")


def _figure_and_axes(ax: Axes | None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    return fig, fig.subplots()


def _map_field(name: str, error: xr.DataArray) -> xr.DataArray:
    """Return ``error`` transposed to (latitude dim, longitude dim)."""
    if not isinstance(error, xr.DataArray) or error.ndim != 2:
        raise DataError(
            f"errors[{name!r}] must be a 2-D DataArray (latitude, longitude), got dims "
            f"{list(getattr(error, 'dims', []))}. Reduce other dims, for example with .mean('time')."
        )
    lat_dims = latitude_weights(error).dims
    if len(lat_dims) != 1:
        raise DataError(
            f"errors[{name!r}] has a {len(lat_dims)}-D latitude coordinate, but error_maps needs a "
            "regular grid with latitude as a dimension coordinate."
        )
    (lat_dim,) = lat_dims
    (lon_dim,) = [dim for dim in error.dims if dim != lat_dim]
    return error.transpose(lat_dim, lon_dim)


def _coordinate_values(field: xr.DataArray, dim: str) -> np.ndarray:
    if dim in field.coords:
        return np.asarray(field[dim].values)
    return np.arange(field.sizes[dim])


def _axis_label(field: xr.DataArray, dim: str) -> str:
    if dim not in field.coords:
        return str(dim)
    coord = field[dim]
    label = coord.attrs.get("long_name") or coord.attrs.get("standard_name") or str(dim)
    units = coord.attrs.get("units")
    return f"{label} [{units}]" if units else label
