"""Diagnostic figures of a conditional weight update run.

Figures: error and skill against extrapolation distance, error maps, weight
anomalies against the predictor, area-mean time series, loss curves and a
one-page summary of a finished run.

Each function draws on the given axes or on a new ``matplotlib.figure.Figure``
that is not registered with pyplot, so figures made in a loop need no closing
and no display is required. Each returns the Figure and never shows it.
Plotting needs the values, so lazy (dask-backed) inputs are computed here.

Maps use cartopy (PlateCarree axes with coastlines) when it can be imported,
and plain latitude-longitude axes otherwise. Time axes show decimal years on
the data's own calendar, so cftime calendars such as 360_day and noleap need
neither nc-time-axis nor a conversion to the standard calendar.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

from condupdate._errors import DataError, ExtrapolationWarning
from condupdate._io import atomic_path
from condupdate.skill import latitude_weights, rmse

if TYPE_CHECKING:
    from condupdate.jobs.redraw import RunOutputs

__all__ = [
    "anomaly_vs_predictor",
    "error_maps",
    "error_vs_distance",
    "loss_curves",
    "save_figure",
    "skill_vs_distance",
    "summary",
    "time_series",
]

logger = logging.getLogger(__name__)

# One colour per method in every figure, so a method is recognised across panels.
_METHOD_COLOURS = {
    "truth": "black",
    "parent": "tab:blue",
    "child": "tab:red",
    "child_ensemble": "tab:orange",
    "pattern_scaling": "tab:green",
    "nearest_subset": "tab:purple",
    "task_vector": "tab:brown",
    "retrained": "tab:olive",
}
# Colours for methods not named above, in order of appearance.
_OTHER_COLOURS = ("tab:pink", "tab:cyan", "tab:gray", "gold", "navy", "teal")

# Dimension names of horizontal grids, for maps.
_LATITUDE_DIMS = ("latitude", "lat", "nav_lat", "y")
_LONGITUDE_DIMS = ("longitude", "lon", "nav_lon", "x")

_DISTANCE_LABEL = "Distance beyond the training range (training standard deviations)"
_PERCENTILES = (5.0, 95.0)


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
    _check_errors_on_distance(distance, errors)
    if units is None:
        units = next(iter(errors.values())).attrs.get("units")

    fig, ax = _figure_and_axes(ax)
    x = np.asarray(distance.values)
    for name, error in errors.items():
        # Markers without lines, because the samples need not be ordered by distance.
        ax.plot(x, np.asarray(error.values), marker="o", linestyle="none", label=name)

    ax.set_xlabel(_DISTANCE_LABEL)
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
    label: str | None = None,
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
    label : str, optional
        Colorbar label, for example ``"mean absolute error [K]"``. By default
        ``units``, or ``"error"`` without units.

    Returns
    -------
    matplotlib.figure.Figure
        The figure. All panels share one colour scale, spanning the minimum to
        maximum over every panel, and one colorbar. Each panel title gives the
        method name and the area-weighted (cos-latitude) mean over valid cells.
        When cartopy can be imported, new panels are PlateCarree map axes with
        coastlines. Given axes are drawn on as they are, with coastlines when
        they are cartopy GeoAxes.

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
        projection = _map_projection(next(iter(fields.values())))
        subplot_kw = {} if projection is None else {"projection": projection}
        axes = list(fig.subplots(1, len(fields), squeeze=False, subplot_kw=subplot_kw)[0])
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
        mesh = _draw_map(panel, field, values[name], cmap=cmap, norm=norm)
        area_mean = float(field.weighted(latitude_weights(field)).mean(skipna=True))
        suffix = "" if units is None else f" {units}"
        panel.set_title(f"{name}\narea mean {area_mean:.3g}{suffix}")

    if label is None:
        label = units if units is not None else "error"
    fig.colorbar(mesh, ax=axes, label=label)
    return fig


def skill_vs_distance(
    distance: xr.DataArray,
    errors: Mapping[str, xr.DataArray],
    bands: Mapping[str, xr.DataArray] | None = None,
    ax: Axes | None = None,
    units: str | None = None,
    interval: Literal["percentile", "spread"] = "percentile",
) -> Figure:
    """Plot the error of the child and every baseline against the extrapolation distance.

    Each method is one line through its points in order of distance, so the
    growth of the error with distance reads from left to right. Methods with
    ensemble members get a shaded band of the per-member error.

    Parameters
    ----------
    distance : xarray.DataArray
        Extrapolation distance [1] on one dim, for example one value per
        application year, as returned by
        :func:`condupdate.skill.extrapolation_distance`.
    errors : mapping of str to xarray.DataArray
        Error of each method (parent, child, baselines) on the dim and
        coordinate of ``distance``, for example the area-weighted RMSE per year
        [K]. For an ensemble, give the error of its mean here.
    bands : mapping of str to xarray.DataArray, optional
        Per-member error of each ensemble method, dims ``(member, <dim of
        distance>)`` with at least 2 members, in the units of ``errors``. A key
        that is also in ``errors`` shares its colour, and a key that is not gets
        a dashed line through the member median (``interval="percentile"``) or
        the member mean (``interval="spread"``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on. By default a new figure is made.
    units : str, optional
        Units of the errors for the y label. By default the ``units`` attr of the
        first error.
    interval : {"percentile", "spread"}, default "percentile"
        Band limits: the 5th and 95th percentile of the members' errors, or
        their mean plus and minus one standard deviation (ddof=1).

    Returns
    -------
    matplotlib.figure.Figure
        The figure: one line per method in mapping order, then one filled band
        per entry of ``bands``, a legend, and an RMSE axis that starts at 0.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> distance = xr.DataArray([1.5, 0.0, 0.5], dims="time")
    >>> errors = {"parent": xr.DataArray([1.4, 0.2, 0.6], dims="time", attrs={"units": "K"}),
    ...           "child": xr.DataArray([0.7, 0.2, 0.3], dims="time", attrs={"units": "K"})}
    >>> rng = np.random.default_rng(0)
    >>> members = errors["child"] + 0.1 * xr.DataArray(rng.random((10, 3)), dims=("member", "time"))
    >>> fig = skill_vs_distance(distance, errors, bands={"child": members})
    >>> fig.axes[0].lines[0].get_xdata().tolist()
    [0.0, 0.5, 1.5]
    """
    dim = _check_errors_on_distance(distance, errors)
    bands = {} if bands is None else bands
    if not isinstance(bands, Mapping):
        raise TypeError(f"bands must be a mapping of method name to DataArray, got {type(bands).__name__}.")
    for name, band in bands.items():
        _check_band(name, band, distance, dim)
    if interval not in ("percentile", "spread"):
        raise ValueError(f"interval must be 'percentile' or 'spread', got {interval!r}.")
    if units is None:
        units = next(iter(errors.values())).attrs.get("units")

    fig, ax = _figure_and_axes(ax)
    x = np.asarray(distance.values, dtype=float)
    order = np.argsort(x, kind="stable")
    colours = _method_colours([*errors, *bands])
    for name, error in errors.items():
        y = np.asarray(error.values, dtype=float)[order]
        keep = np.isfinite(x[order]) & np.isfinite(y)
        # An ensemble mean often matches the child, so it is dashed and drawn on top.
        style = {"linestyle": "--", "markersize": 3, "zorder": 3} if name in bands else {"markersize": 4}
        ax.plot(x[order][keep], y[keep], marker="o", color=colours[name], label=_method_label(name), **style)

    for name, band in bands.items():
        per_member = np.asarray(band.transpose("member", dim).values, dtype=float)[:, order]
        centre, low, high = _member_interval(per_member, interval)
        keep = np.isfinite(x[order]) & np.isfinite(low) & np.isfinite(high)
        if name not in errors:
            ax.plot(x[order][keep], centre[keep], linestyle="--", color=colours[name], label=_method_label(name))
        what = "5-95th percentile" if interval == "percentile" else "mean ± 1 std"
        ax.fill_between(
            x[order][keep],
            low[keep],
            high[keep],
            color=colours[name],
            alpha=0.2,
            linewidth=0,
            label=f"{_method_label(name)}, {band.sizes['member']} members: {what}",
        )

    ax.set_xlabel(_DISTANCE_LABEL)
    ax.set_ylabel("RMSE" if units is None else f"RMSE [{units}]")
    ax.set_ylim(bottom=0)
    ax.set_title("Skill versus extrapolation distance")
    ax.legend(fontsize="small")
    return fig


def anomaly_vs_predictor(
    anomalies: xr.DataArray,
    n_parameters: int = 6,
    regressor: Any | None = None,
    application_predictor: xr.DataArray | np.ndarray | Sequence[float] | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    predictor: str | None = None,
) -> Figure:
    """Plot the weight anomaly of the parameters with the largest signal against the predictor.

    One panel per parameter shows each subset's anomaly (``theta_k - theta0``)
    at the subset's predictor and the regression line through them. When the
    application predictors are given, the extrapolation range is shaded from
    the end of the training range to the farthest application predictor.

    Parameters
    ----------
    anomalies : xarray.DataArray
        Anomaly store [1], dims ``(subset, parameter)`` or ``(member, subset,
        parameter)``, with one coordinate per predictor on ``subset`` and the
        attrs ``predictors`` (JSON list of names), as written by
        :func:`condupdate.update.save_anomalies`. The attrs ``tensor_names`` and
        ``tensor_shapes`` and the ``tensor`` coordinate, when present, name
        each parameter in the panel titles.
    n_parameters : int, default 6
        Number of parameters to show. Without members they are those whose
        anomaly varies most across subsets (variance, ddof=1). With 2 or more
        members they are those with the largest signal-to-noise ratio: the
        variance across subsets of the member mean over the mean across subsets
        of the variance across members (both ddof=1).
    regressor : fitted weight regressor, optional
        Evaluated on 200 predictor values spanning the training and application
        predictors to draw the line. One of: a fitted
        :class:`~condupdate.update.ConditionalUpdate` (its
        ``predict_anomaly``), an :class:`~condupdate.bundle.AdaptedEmulator`
        (its ``update``), or a scikit-learn regressor whose ``predict`` maps
        ``(n, n_predictors)`` to ``(n, n_parameters)``. Other predictors are
        held at their mean over the subsets. By default the line is a
        least-squares straight line through the subsets' (member-mean)
        anomalies.
    application_predictor : xarray.DataArray or array_like, optional
        Predictor values of the application samples, in the units of the
        predictor coordinate, any shape. A DataArray with a ``predictor`` dim
        is reduced to the shown predictor. By default no range is shaded.
    ax : matplotlib.axes.Axes or sequence of Axes, optional
        One axes per shown parameter. By default a new figure with up to three
        panels per row is made.
    predictor : str, optional
        Predictor on the x axis. By default the first name in the
        ``predictors`` attr.

    Returns
    -------
    matplotlib.figure.Figure
        The figure. Each panel title names the tensor and element and gives
        the ranking score; the first panel contains the legend.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> temperature = np.linspace(286.0, 288.0, 8)
    >>> values = np.outer(temperature - 287.0, rng.normal(size=20)) + 0.01 * rng.normal(size=(8, 20))
    >>> anomalies = xr.DataArray(values, dims=("subset", "parameter"),
    ...     coords={"subset": [f"s{k}" for k in range(8)], "parameter": np.arange(20),
    ...             "temperature": ("subset", temperature, {"units": "K"})},
    ...     attrs={"predictors": '["temperature"]'})
    >>> fig = anomaly_vs_predictor(anomalies, n_parameters=4, application_predictor=[289.0, 290.0])
    >>> len(fig.axes)
    4
    """
    values, name = _check_anomalies(anomalies, predictor)
    if isinstance(n_parameters, bool) or not isinstance(n_parameters, (int, np.integer)) or n_parameters < 1:
        raise ValueError(f"n_parameters must be a positive integer, got {n_parameters!r}.")
    predictor_names = _predictor_names(anomalies)
    x_train = np.asarray(anomalies[name].values, dtype=float)
    if np.ptp(x_train) == 0:
        raise DataError(
            f"Predictor {name!r} takes the value {x_train[0]:g} in every subset, so there is no range to "
            "plot the anomalies against; choose a predictor that varies between subsets."
        )
    x_apply = _application_values(application_predictor, name)

    # Prepare: rank the parameters and evaluate the line on a common grid.
    score, score_name = _anomaly_signal(values)
    n_shown = min(int(n_parameters), values.shape[-1])
    ranked = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:n_shown]
    mean = values.mean(axis=0)  # (subset, parameter)
    low = min(x_train.min(), x_apply.min()) if x_apply.size else x_train.min()
    high = max(x_train.max(), x_apply.max()) if x_apply.size else x_train.max()
    grid = np.linspace(low, high, 200)
    if regressor is not None:
        others = {n: float(np.mean(anomalies[n].values)) for n in predictor_names}
        matrix = np.stack([grid if n == name else np.full_like(grid, others[n]) for n in predictor_names], axis=1)
        line = _evaluate_regressor(regressor, matrix, values.shape[-1])[:, ranked]
        line_label = "weight regressor"
    else:
        slope, intercept = np.polyfit(x_train, mean[:, ranked], deg=1)
        line = intercept[None, :] + grid[:, None] * slope[None, :]
        line_label = "least-squares line"

    # Draw one panel per parameter.
    fig, axes = _panels(ax, n_shown)
    x_label = _axis_label(anomalies, name)
    n_members = values.shape[0]
    for k, (panel, parameter) in enumerate(zip(axes, ranked)):
        if n_members > 1:
            spread = values[:, :, parameter].std(axis=0, ddof=1)
            panel.errorbar(
                x_train,
                mean[:, parameter],
                yerr=spread,
                fmt="o",
                markersize=4,
                capsize=3,
                color="tab:blue",
                label=f"subset anomaly, mean ± 1 std of {n_members} members",
            )
        else:
            panel.plot(x_train, mean[:, parameter], "o", markersize=4, color="tab:blue", label="subset anomaly")
        panel.plot(grid, line[:, k], color="tab:red", label=line_label)
        _shade_extrapolation(panel, x_train, x_apply)
        panel.axhline(0.0, color="grey", linewidth=0.6, zorder=0)
        panel.set_title(f"{_parameter_name(anomalies, int(parameter))}\n{score_name} {score[parameter]:.3g}")
        panel.set_xlabel(x_label)
        panel.set_ylabel("anomaly (fine-tuned minus parent)")
    axes[0].legend(fontsize="small")
    if ax is None:
        fig.suptitle(f"Weight anomalies against {name}: the {n_shown} parameters with the largest {score_name}")
    return fig


def time_series(
    truth: xr.DataArray,
    predictions: Mapping[str, xr.DataArray],
    dim: str = "time",
    weights: xr.DataArray | None = None,
    ax: Axes | None = None,
    interval: Literal["percentile", "spread"] = "percentile",
) -> Figure:
    """Plot the area-mean truth and predictions along ``dim``.

    Every field is averaged over all dims except ``dim`` (and ``member``),
    over the cells where the truth is valid, so every line averages the same
    cells. Dates on cftime calendars (360_day, noleap, all_leap, julian, ...)
    and numpy datetimes are drawn as decimal years on their own calendar, with
    ticks at whole years.

    Parameters
    ----------
    truth : xarray.DataArray
        True field with ``dim``, for example (time, latitude, longitude) [K].
    predictions : mapping of str to xarray.DataArray
        Prediction of each method on the coordinates of ``truth``. A
        prediction with a ``member`` dim is drawn as its member mean and a band
        of its members' area means.
    dim : str, default "time"
        Dim along the x axis.
    weights : xarray.DataArray, optional
        Area weights [1] on some of the other dims. By default
        :func:`condupdate.skill.latitude_weights` when ``truth`` has a
        latitude coordinate, and equal weights otherwise.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on. By default a new figure is made.
    interval : {"percentile", "spread"}, default "percentile"
        Band of ensemble predictions: the 5th and 95th percentile of the
        members, or their mean plus and minus one standard deviation (ddof=1).

    Returns
    -------
    matplotlib.figure.Figure
        The figure: the truth as a thin black line drawn on top, then one line
        per method in mapping order and one band per ensemble. With dates, the
        x label names the calendar, for example ``"year (360_day calendar)"``.
        A new figure has its legend below the axes (``fig.legends[0]``), and
        given axes get theirs in one row above them (``ax.get_legend()``).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> time = xr.date_range("2070-07-01", periods=5, freq="YS-JUL", calendar="noleap", use_cftime=True)
    >>> truth = xr.DataArray(np.arange(5.0), dims="time", coords={"time": time}, attrs={"units": "K"})
    >>> fig = time_series(truth, {"child": truth + 0.1})
    >>> fig.axes[0].get_xlabel()
    'year (noleap calendar)'
    """
    if not isinstance(truth, xr.DataArray) or dim not in truth.dims:
        raise DataError(
            f"truth must be a DataArray with dim {dim!r}, got {type(truth).__name__} with dims "
            f"{list(getattr(truth, 'dims', []))}. Pass dim= with the name of the dim to plot along."
        )
    _check_not_empty(predictions, argument="predictions")
    for name, prediction in predictions.items():
        _check_prediction(name, prediction, truth)
    if interval not in ("percentile", "spread"):
        raise ValueError(f"interval must be 'percentile' or 'spread', got {interval!r}.")
    other = [d for d in truth.dims if d != dim]
    if weights is None and other:
        weights = _default_weights(truth)

    # Area means over the cells where the truth is valid.
    valid = truth.notnull()
    series = {"truth": _area_mean(truth, other, weights)}
    for name, prediction in predictions.items():
        series[name] = _area_mean(prediction.where(valid), other, weights)
    x, x_label, calendar = _time_axis_values(truth, dim)

    own_figure = ax is None
    if own_figure:
        fig = Figure(figsize=(10.0, 5.0), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    colours = _method_colours(list(series))
    for name, mean in series.items():
        if "member" in mean.dims:
            per_member = np.asarray(mean.transpose("member", dim).values, dtype=float)
            centre, low, high = _member_interval(per_member, interval)
            what = "5-95th percentile" if interval == "percentile" else "mean ± 1 std"
            label = _method_label(name)
            # Dashed and on top, because the member mean often matches the child.
            ax.plot(
                x, np.nanmean(per_member, axis=0), color=colours[name], linestyle="--", zorder=3, label=f"{label}, member mean"
            )
            ax.fill_between(
                x, low, high, color=colours[name], alpha=0.2, linewidth=0, label=f"{label}, {per_member.shape[0]} members: {what}"
            )
        elif name == "truth":
            # Thin and on top, so the truth stays visible where a method matches it.
            ax.plot(x, np.asarray(mean.values, dtype=float), color=colours[name], linewidth=1.3, zorder=4, label="truth")
        else:
            ax.plot(x, np.asarray(mean.values, dtype=float), color=colours[name], linewidth=2.4, label=_method_label(name))

    labels = _category_labels(truth, dim)
    if labels is not None:
        # Named steps (models, scenarios) are drawn at their positions and labelled by name.
        ax.set_xticks(x, labels, rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    if calendar is not None:
        # Whole years as ticks, printed without a thousands offset.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:.0f}"))
    ax.set_xlabel(x_label)
    ax.set_ylabel(_series_label(truth, other, weights))
    title = _field_name(truth)
    if other:
        averaged = "Area-weighted mean" if weights is not None else "Mean"
        title = f"{averaged} {title} along {dim}"
    # The legend goes outside the axes, because the lines span the whole x
    # range: below a figure of its own, and in one row above given axes,
    # which are usually wide panels of a larger figure.
    if own_figure:
        ax.set_title(title)
        fig.legend(loc="outside lower center", ncols=3, fontsize="small")
    else:
        ax.set_title(title, loc="left")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(ax.get_legend_handles_labels()[0]), frameon=False, fontsize="small")
    return fig


def loss_curves(history: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    """Plot the loss per epoch of the parent training and of each subset's fine-tuning.

    The parent is drawn bold in black. Each fine-tuning starts from the parent
    weights that training kept (the epoch of lowest validation loss), so its
    curve is drawn from that epoch on, thin, in one colour per subset.
    Validation losses are dashed.

    Parameters
    ----------
    history : mapping
        Contents of a run's ``training_history.json``: ``{"parent":
        {"train_loss": [...], "val_loss": [...]}, "finetune": {subset label:
        {"train_loss": [...], "val_loss": [...]}}}``. Losses are mean squared
        errors of the standardised targets [1]. An optional ``best_epoch``
        (0-based) in ``parent`` gives the epoch kept; by default the first
        epoch of lowest ``val_loss``, as :func:`condupdate.emulators.train`
        keeps it.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on. By default a new figure is made.

    Returns
    -------
    matplotlib.figure.Figure
        The figure on a logarithmic loss axis: up to two parent lines, up to
        two lines per fine-tuned subset, and a dotted vertical line at the epoch
        the fine-tunings start from. A validation curve identical to the
        training curve means training had no validation samples (it then
        monitors the training loss) and is not drawn.

    Examples
    --------
    >>> history = {"parent": {"train_loss": [1.0, 0.3, 0.2], "val_loss": [0.9, 0.4, 0.25]},
    ...            "finetune": {"1860-1869": {"train_loss": [0.2, 0.15], "val_loss": [0.3, 0.28]}}}
    >>> fig = loss_curves(history)
    >>> len(fig.axes[0].lines)  # 2 parent, 2 fine-tune, 1 marker of the start epoch
    5
    """
    parent, finetune = _check_history(history)
    fig, ax = _figure_and_axes(ax)

    # Parent: epochs numbered from 1.
    train = np.asarray(parent["train_loss"], dtype=float)
    val = np.asarray(parent.get("val_loss", []), dtype=float)
    epochs = np.arange(1, train.size + 1)
    ax.plot(epochs, train, color="black", linewidth=2.5, label="parent, training")
    if val.size and not np.array_equal(val, train):
        ax.plot(np.arange(1, val.size + 1), val, color="black", linewidth=2.5, linestyle="--", label="parent, validation")
    start = _kept_epoch(parent) + 1

    # Fine-tunings: one colour per subset, continuing from the kept parent epoch.
    # Keys of several members read "<subset>/member <m>", as ConditionalUpdate writes them.
    subsets = list(dict.fromkeys(str(key).split("/member ")[0] for key in finetune))
    n_members = len(finetune) // max(len(subsets), 1)
    colours = dict(zip(subsets, matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, max(len(subsets), 1)))))
    what = f"{len(subsets)} subsets" + (f" x {n_members} members" if n_members > 1 else "")
    for k, (key, curves) in enumerate(finetune.items()):
        train = np.asarray(curves["train_loss"], dtype=float)
        val = np.asarray(curves.get("val_loss", []), dtype=float)
        colour = colours[str(key).split("/member ")[0]]
        first = k == 0
        ax.plot(
            start + np.arange(1, train.size + 1),
            train,
            color=colour,
            linewidth=0.9,
            label="fine-tuning, training" if first else "_nolegend_",
        )
        if val.size and not np.array_equal(val, train):
            ax.plot(
                start + np.arange(1, val.size + 1),
                val,
                color=colour,
                linewidth=0.9,
                linestyle="--",
                label="fine-tuning, validation" if first else "_nolegend_",
            )
    if finetune:
        ax.axvline(start, color="grey", linestyle=":", linewidth=1.0, label=f"parent weights kept (epoch {start})")

    ax.set_yscale("log")
    # Room above the highest loss (0.8 times the plotted decades), so the
    # legend in the upper right covers no curve.
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * (high / low) ** 0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"epoch (fine-tuning of {what}, one colour per subset)" if finetune else "epoch")
    ax.set_ylabel("loss: MSE of standardised targets [1]")
    ax.set_title("Training and fine-tuning loss")
    ax.legend(fontsize="small", loc="upper right")
    return fig


def summary(
    run: str | os.PathLike | RunOutputs,
    target: str | None = None,
    fig: Figure | SubFigure | None = None,
) -> Figure:
    """Draw a one-page summary of a finished run.

    Panels: the skill table and extrapolation distance as text, the error of
    each method against extrapolation distance, the training and fine-tuning
    loss, and the area-mean series along the split dim. On a
    latitude-longitude grid, maps follow: the time-mean absolute error of
    parent and child on one colour scale, and the child's time-mean error.

    Parameters
    ----------
    run : str, os.PathLike or RunOutputs
        Folder of a finished run, or its outputs as read by
        :func:`condupdate.jobs.redraw.load_outputs`.
    target : str, optional
        Target variable to show. By default the first target of the run.
    fig : matplotlib.figure.Figure or SubFigure, optional
        Figure to draw into. By default a new 16 x 12 inch figure.

    Returns
    -------
    matplotlib.figure.Figure or SubFigure
        The figure drawn on, titled with the run name, split, predictors and regressor.
        The panel order in ``fig.axes`` is: skill text, error versus distance,
        loss curves, series, then the map panels and their colorbars. Panels
        whose data the run lacks (distance on other dims than the split dim, a
        grid without latitude and longitude) hold a line of text saying so.

    Raises
    ------
    FileNotFoundError
        If ``run`` is a folder that lacks a file of a finished run.
    """
    from condupdate.jobs.redraw import RunOutputs, load_outputs

    outputs = run if isinstance(run, RunOutputs) else load_outputs(run)
    target = outputs.targets[0] if target is None else target
    ds = outputs.target_predictions(target)
    split_dim = outputs.split_dim
    map_dims = _map_dims(ds.truth)
    units = ds.truth.attrs.get("units")

    # Layout: a 3 x 3 grid, or 2 x 3 without maps.
    if fig is None:
        fig = Figure(figsize=(16.0, 12.0 if map_dims else 8.5), layout="constrained")
    rows = 3 if map_dims else 2
    grid = fig.add_gridspec(rows, 3, height_ratios=[1.0, 0.9, 1.1][:rows])
    text_ax = fig.add_subplot(grid[0, 0])
    distance_ax = fig.add_subplot(grid[0, 1])
    loss_ax = fig.add_subplot(grid[0, 2])
    series_ax = fig.add_subplot(grid[1, :])

    _draw_skill_text(text_ax, outputs, target)
    errors, bands = outputs.errors_by_distance(target)
    if errors:
        skill_vs_distance(ds.extrapolation_distance, errors, bands=bands, ax=distance_ax, units=units)
        distance_ax.set_title(f"RMSE per {split_dim} step applied")
    else:
        _no_data(distance_ax, f"extrapolation distance is not one value per {split_dim} step")
    loss_curves(outputs.history, ax=loss_ax)
    time_series(ds.truth, outputs.methods(target), dim=split_dim, ax=series_ax)

    if map_dims:
        projection = _map_projection(ds.truth.isel({d: 0 for d in ds.truth.dims if d not in map_dims}))
        subplot_kw = {} if projection is None else {"projection": projection}
        map_axes = [fig.add_subplot(grid[2, k], **subplot_kw) for k in range(3)]
        absolute, signed = outputs.error_fields(target, methods=("parent", "child"))
        error_maps(
            {f"{_method_label(m)}: mean absolute error": field for m, field in absolute.items()},
            ax=map_axes[: len(absolute)],
            units=units,
            label=f"mean absolute error [{units}]" if units else "mean absolute error",
        )
        error_maps(
            {"child: mean error (prediction minus truth)": signed["child"]},
            ax=map_axes[len(absolute) :],
            units=units,
            cmap="RdBu_r",
            symmetric=True,
            label=f"mean error [{units}]" if units else "mean error",
        )

    fig.suptitle(outputs.description(target), fontsize="large")
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


def _check_not_empty(errors: Mapping[str, xr.DataArray], argument: str = "errors") -> None:
    if not isinstance(errors, Mapping):
        raise TypeError(f"{argument} must be a mapping of method name to DataArray, got {type(errors).__name__}.")
    if not errors:
        noun = "error" if argument == "errors" else "prediction"
        raise ValueError(f"{argument} is empty. Give at least one method name and its {noun}.")


def _check_errors_on_distance(distance: xr.DataArray, errors: Mapping[str, xr.DataArray]) -> str:
    """Check that every error lies on the one dim and coordinate of ``distance``, and return that dim."""
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
        _check_aligned(f"errors[{name!r}]", error, distance, dim)
    return dim


def _check_band(name: str, band: xr.DataArray, distance: xr.DataArray, dim: str) -> None:
    if not isinstance(band, xr.DataArray) or set(band.dims) != {"member", dim}:
        raise DataError(
            f"bands[{name!r}] must be a DataArray with dims ('member', {dim!r}), got dims "
            f"{list(getattr(band, 'dims', []))}. Give the error of each member at each distance."
        )
    if band.sizes["member"] < 2:
        raise DataError(
            f"bands[{name!r}] has {band.sizes['member']} member, but a band needs at least 2. "
            "Leave single-member methods out of bands."
        )
    _check_aligned(f"bands[{name!r}]", band, distance, dim)


def _check_aligned(argument: str, array: xr.DataArray, distance: xr.DataArray, dim: str) -> None:
    try:
        xr.align(distance, array, join="exact", exclude=[d for d in array.dims if d != dim])
    except ValueError as err:
        raise DataError(
            f"{argument} and distance have different {dim!r} coordinates ({err}). "
            "Give both on the same application samples."
        ) from err


def _method_colours(names: Sequence[str]) -> dict[str, str]:
    """Give each method its fixed colour, and unnamed methods the next free colour."""
    colours: dict[str, str] = {}
    spare = iter(_OTHER_COLOURS * (len(names) // len(_OTHER_COLOURS) + 1))
    for name in names:
        if name not in colours:
            colours[name] = _METHOD_COLOURS.get(str(name).replace(" ", "_")) or next(spare)
    return colours


def _method_label(name: str) -> str:
    return str(name).replace("_", " ")


def _member_interval(per_member: np.ndarray, interval: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return centre, lower and upper limit over axis 0 (members), NaN where no member is finite."""
    finite = np.isfinite(per_member).any(axis=0)
    centre, low, high = (np.full(per_member.shape[1:], np.nan) for _ in range(3))
    if not finite.any():
        return centre, low, high
    members = per_member[:, finite]
    if interval == "percentile":
        low[finite], centre[finite], high[finite] = np.nanpercentile(members, [_PERCENTILES[0], 50.0, _PERCENTILES[1]], axis=0)
    else:
        mean = np.nanmean(members, axis=0)
        spread = np.nanstd(members, axis=0, ddof=1)
        centre[finite], low[finite], high[finite] = mean, mean - spread, mean + spread
    return centre, low, high


# --------------------------------------------------------------------------- #
# Anomalies
# --------------------------------------------------------------------------- #


def _check_anomalies(anomalies: xr.DataArray, predictor: str | None) -> tuple[np.ndarray, str]:
    """Return the anomalies as (member, subset, parameter) values and the predictor to plot against."""
    if not isinstance(anomalies, xr.DataArray) or set(anomalies.dims) not in (
        {"subset", "parameter"},
        {"member", "subset", "parameter"},
    ):
        raise DataError(
            f"anomalies must be a DataArray with dims (subset, parameter) or (member, subset, parameter), got "
            f"{type(anomalies).__name__} with dims {list(getattr(anomalies, 'dims', []))}. "
            "Read a stored anomaly file with condupdate.update.load_anomalies."
        )
    names = _predictor_names(anomalies)
    name = names[0] if predictor is None else predictor
    if name not in names:
        raise DataError(f"predictor={name!r} is not a predictor of the anomalies, which have {names}.")
    if anomalies.sizes["subset"] < 2:
        raise DataError(
            f"anomalies has {anomalies.sizes['subset']} subset, but a line against the predictor needs at least 2."
        )
    values = anomalies.transpose(..., "subset", "parameter").values
    values = np.asarray(values, dtype=float).reshape(-1, anomalies.sizes["subset"], anomalies.sizes["parameter"])
    return values, name


def _predictor_names(anomalies: xr.DataArray) -> list[str]:
    if "predictors" in anomalies.attrs:
        names = json.loads(anomalies.attrs["predictors"])
    else:
        # Stores built by hand may lack the attr, so every numeric coordinate on subset is then a predictor.
        names = [
            str(n)
            for n, coord in anomalies.coords.items()
            if coord.dims == ("subset",) and n != "subset" and np.issubdtype(coord.dtype, np.number)
        ]
    missing = [n for n in names if n not in anomalies.coords]
    if not names or missing:
        raise DataError(
            f"anomalies has no coordinate for the predictors {missing or names}. Give each subset's predictor "
            "as a coordinate on 'subset' and list the names in the 'predictors' attr (a JSON list)."
        )
    return names


def _application_values(application_predictor: Any, name: str) -> np.ndarray:
    if application_predictor is None:
        return np.array([])
    if isinstance(application_predictor, xr.DataArray) and "predictor" in application_predictor.dims:
        application_predictor = application_predictor.sel(predictor=name)
    values = np.asarray(application_predictor, dtype=float).ravel()
    return values[np.isfinite(values)]


def _anomaly_signal(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Return a score per parameter from (member, subset, parameter) anomalies, and its name."""
    if values.shape[0] < 2:
        return values[0].var(axis=0, ddof=1), "variance across subsets"
    # Signal: variance across subsets of the member mean. Noise: mean over subsets
    # of the variance across members. As ConditionalUpdate.signal_to_noise, a
    # parameter that never varies scores 0 and one with signal but no noise inf.
    signal = values.mean(axis=0).var(axis=0, ddof=1)
    noise = values.var(axis=0, ddof=1).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(noise > 0, signal / np.where(noise > 0, noise, 1.0), np.where(signal > 0, np.inf, 0.0))
    return ratio, "signal-to-noise ratio"


def _evaluate_regressor(regressor: Any, predictors: np.ndarray, n_parameters: int) -> np.ndarray:
    """Return the anomalies ``(n, n_parameters)`` that ``regressor`` predicts at ``predictors`` ``(n, n_predictors)``."""
    update = getattr(regressor, "update", regressor)
    # The figure shades the extrapolation range, so a regressor's warning about
    # leaving its training range adds nothing to it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        if hasattr(update, "predict_anomaly"):
            values = update.predict_anomaly(predictors)
        elif hasattr(regressor, "predict"):
            values = regressor.predict(predictors)
        else:
            raise TypeError(
                f"regressor must be a fitted ConditionalUpdate, AdaptedEmulator or scikit-learn regressor, got "
                f"{type(regressor).__name__}."
            )
    values = np.asarray(values, dtype=float).reshape(len(predictors), -1)
    if values.shape[1] != n_parameters:
        raise DataError(
            f"regressor predicts {values.shape[1]} parameters but the anomalies have {n_parameters}. When only "
            "some parameters are updated, pass the ConditionalUpdate, whose predict_anomaly returns all of them."
        )
    return values


def _panels(ax: Axes | Sequence[Axes] | None, n: int) -> tuple[Figure | SubFigure, list[Axes]]:
    if ax is None:
        ncols = min(3, n)
        nrows = -(-n // ncols)
        fig = Figure(figsize=(4.3 * ncols, 3.4 * nrows + 0.5), layout="constrained")
        axes = list(np.ravel(fig.subplots(nrows, ncols, squeeze=False)))
        for extra in axes[n:]:
            extra.remove()
        return fig, axes[:n]
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axes) < n:
        raise ValueError(f"ax has {len(axes)} axes but {n} parameters are shown. Give one axes per parameter.")
    return axes[0].figure, axes[:n]


def _shade_extrapolation(ax: Axes, x_train: np.ndarray, x_apply: np.ndarray) -> None:
    """Shade where application predictors lie beyond the training range, from its end outwards."""
    if not x_apply.size:
        return
    label = "application beyond training range"
    if x_apply.max() > x_train.max():
        ax.axvspan(x_train.max(), x_apply.max(), color="tab:orange", alpha=0.15, linewidth=0, label=label)
        label = "_nolegend_"
    if x_apply.min() < x_train.min():
        ax.axvspan(x_apply.min(), x_train.min(), color="tab:orange", alpha=0.15, linewidth=0, label=label)


def _parameter_name(anomalies: xr.DataArray, parameter: int) -> str:
    """Name a parameter by its tensor and element, for example ``layers.0.weight[3, 1]``."""
    try:
        names = json.loads(anomalies.attrs["tensor_names"])
        shapes = json.loads(anomalies.attrs["tensor_shapes"])
    except (KeyError, ValueError):
        if "tensor" in anomalies.coords:
            return f"{anomalies['tensor'].values[parameter]} #{parameter}"
        return f"parameter {parameter}"
    start = 0
    for name, shape in zip(names, shapes):
        size = int(np.prod(shape))
        if parameter < start + size:
            index = np.unravel_index(parameter - start, shape) if shape else ()
            return f"{name}[{', '.join(str(int(i)) for i in index)}]"
        start += size
    return f"parameter {parameter}"


# --------------------------------------------------------------------------- #
# Series
# --------------------------------------------------------------------------- #


def _check_prediction(name: str, prediction: xr.DataArray, truth: xr.DataArray) -> None:
    if not isinstance(prediction, xr.DataArray) or set(prediction.dims) - {"member"} != set(truth.dims):
        raise DataError(
            f"predictions[{name!r}] must be a DataArray on the dims of truth {list(truth.dims)} (and optionally "
            f"'member'), got dims {list(getattr(prediction, 'dims', []))}."
        )
    try:
        xr.align(truth, prediction, join="exact", exclude=["member"])
    except ValueError as err:
        raise DataError(
            f"predictions[{name!r}] and truth have different coordinates ({err}). Give both on the same samples."
        ) from err


def _default_weights(truth: xr.DataArray) -> xr.DataArray | None:
    try:
        return latitude_weights(truth)
    except DataError:
        # No latitude coordinate: an unweighted mean, as for depth levels or samples.
        return None


def _area_mean(field: xr.DataArray, dims: list[str], weights: xr.DataArray | None) -> xr.DataArray:
    if not dims:
        return field
    if weights is None:
        return field.mean(dims, skipna=True)
    return field.weighted(weights.fillna(0.0)).mean(dims, skipna=True)


def _time_axis_values(field: xr.DataArray, dim: str) -> tuple[np.ndarray, str, str | None]:
    """Return x values, the x label and the calendar (None for a coordinate that is not a date)."""
    if dim not in field.coords:
        return np.arange(field.sizes[dim], dtype=float), f"{dim} (index)", None
    coord = field[dim]
    values = np.asarray(coord.values)
    if np.issubdtype(values.dtype, np.datetime64):
        # numpy datetimes are proleptic Gregorian, and the label keeps the file's own name for that calendar.
        calendar = coord.encoding.get("calendar", "proleptic_gregorian")
        return _datetime64_decimal_years(values), f"year ({calendar} calendar)", calendar
    first = next((v for v in values.ravel() if v is not None), None)
    if values.dtype == object and hasattr(first, "calendar"):
        calendar = first.calendar or "standard"
        return _cftime_decimal_years(values), f"year ({calendar} calendar)", calendar
    if _category_labels(field, dim) is not None:
        return np.arange(values.size, dtype=float), dim, None
    return np.asarray(values, dtype=float), _axis_label(field, dim), None


def _category_labels(field: xr.DataArray, dim: str) -> list[str] | None:
    """Return the labels of a ``dim`` coordinate that contains names (models, scenarios), else None."""
    if dim not in field.coords:
        return None
    values = np.asarray(field[dim].values)
    if values.dtype.kind in "US" or (values.dtype == object and all(isinstance(v, str) for v in values.ravel())):
        return [str(v) for v in values.ravel()]
    return None


def _cftime_decimal_years(dates: np.ndarray) -> np.ndarray:
    """Return year + elapsed fraction of that year, on each date's own calendar (a 360_day year has 360 days)."""
    out = np.full(dates.shape, np.nan)
    for i, date in enumerate(dates):
        if date is None:
            continue
        start = date.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1)
        out[i] = date.year + (date - start) / (end - start)
    return out


def _datetime64_decimal_years(dates: np.ndarray) -> np.ndarray:
    dates = dates.astype("datetime64[ns]")
    years = dates.astype("datetime64[Y]")
    start = years.astype("datetime64[ns]")
    end = (years + np.timedelta64(1, "Y")).astype("datetime64[ns]")
    fraction = (dates - start) / (end - start)
    return years.astype(int) + 1970 + fraction


def _field_name(field: xr.DataArray) -> str:
    name = field.attrs.get("long_name") or field.attrs.get("standard_name") or field.name or "value"
    return str(name).replace("_", " ")


def _series_label(truth: xr.DataArray, other: list[str], weights: xr.DataArray | None) -> str:
    units = truth.attrs.get("units")
    if not other:
        prefix = ""
    elif weights is not None:
        prefix = "area mean "
    else:
        prefix = "mean "
    label = f"{prefix}{_field_name(truth)}"
    return f"{label} [{units}]" if units else label


# --------------------------------------------------------------------------- #
# Loss curves
# --------------------------------------------------------------------------- #


def _check_history(history: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    if not isinstance(history, Mapping) or "parent" not in history:
        keys = sorted(history) if isinstance(history, Mapping) else type(history).__name__
        raise ValueError(
            f"history must be a mapping with the key 'parent' (and optionally 'finetune'), as in a run's "
            f"training_history.json, got {keys}."
        )
    curves = {"parent": history["parent"], **{f"finetune[{k!r}]": v for k, v in history.get("finetune", {}).items()}}
    for name, entry in curves.items():
        if not isinstance(entry, Mapping) or not len(entry.get("train_loss", [])):
            raise ValueError(f"history {name} has no 'train_loss' list. Each entry needs the loss of every epoch.")
    return history["parent"], history.get("finetune", {})


def _kept_epoch(parent: Mapping[str, Any]) -> int:
    """Return the 0-based epoch whose weights training kept: the first of lowest monitored loss."""
    best = parent.get("best_epoch")
    if best is not None and best >= 0:
        return int(best)
    monitored = np.asarray(parent.get("val_loss") or parent["train_loss"], dtype=float)
    return int(np.nanargmin(monitored)) if np.isfinite(monitored).any() else monitored.size - 1


# --------------------------------------------------------------------------- #
# Maps
# --------------------------------------------------------------------------- #


def _map_dims(field: xr.DataArray) -> list[str]:
    """Return the (latitude, longitude) dims of ``field``, or an empty list without both."""
    lat = [d for d in field.dims if d in _LATITUDE_DIMS]
    lon = [d for d in field.dims if d in _LONGITUDE_DIMS]
    return [lat[0], lon[0]] if lat and lon else []


def _map_projection(field: xr.DataArray) -> Any | None:
    """Return a cartopy PlateCarree projection centred on the field, or None without cartopy."""
    try:
        import cartopy.crs as ccrs
    except ImportError:
        return None
    lon = [d for d in field.dims if d in _LONGITUDE_DIMS]
    centre = 0.0
    if lon and lon[0] in field.coords:
        values = np.asarray(field[lon[0]].values, dtype=float)
        if np.ptp(values) < 180.0:
            centre = float(values.min() + values.max()) / 2.0
    return ccrs.PlateCarree(central_longitude=centre)


def _draw_map(panel: Axes, field: xr.DataArray, values: np.ndarray, cmap: str, norm: matplotlib.colors.Normalize):
    """Draw a (latitude, longitude) field on plain axes, or on cartopy GeoAxes with coastlines."""
    lat_name, lon_name = field.dims
    lon = _coordinate_values(field, lon_name)
    lat = _coordinate_values(field, lat_name)
    panel.set_xlabel(_axis_label(field, lon_name))
    panel.set_ylabel(_axis_label(field, lat_name))
    if not hasattr(panel, "projection"):
        return panel.pcolormesh(lon, lat, values, cmap=cmap, norm=norm, shading="nearest")

    # NOTE: this cartopy branch is not run by the tests, which run without cartopy.
    import cartopy.crs as ccrs

    mesh = panel.pcolormesh(lon, lat, values, cmap=cmap, norm=norm, shading="nearest", transform=ccrs.PlateCarree())
    if _coastlines_available():
        panel.coastlines(resolution="110m", linewidth=0.6)
    # GeoAxes hide the axis labels, so gridlines carry the degrees.
    gridlines = panel.gridlines(draw_labels=True, linewidth=0.3, alpha=0.5)
    gridlines.top_labels = gridlines.right_labels = False
    return mesh


@functools.cache
def _coastlines_available() -> bool:
    """Check once whether cartopy has the Natural Earth coastlines, downloading them if it can."""
    from cartopy.io import shapereader

    try:
        shapereader.natural_earth(resolution="110m", category="physical", name="coastline")
    except OSError as err:
        # Offline machines cannot download the shapefile, and the maps are drawn without coastlines.
        logger.warning("cartopy coastlines unavailable, maps are drawn without them: %s", err)
        return False
    return True


# --------------------------------------------------------------------------- #
# Summary
# --------------------------------------------------------------------------- #


def _draw_skill_text(ax: Axes, outputs: RunOutputs, target: str) -> None:
    """Write the skill table, the predictor ranges and the extrapolation distance as text."""
    table = outputs.skill[target]
    truth = outputs.target_predictions(target).truth
    units = truth.attrs.get("units")
    lines = [f"Skill of {_field_name(truth)}" + (f" [{units}]" if units else ""), ""]
    lines.append(f"{'method':<16}{'rmse':>9}{'mae':>9}{'bias':>9}")
    for method, row in table.items():
        cells = "".join(f"{row.get(column, float('nan')):9.3f}" for column in ("rmse", "mae", "bias"))
        lines.append(f"{_method_label(method):<16}{cells}")
    for method, row in outputs.ensemble_skill.get(target, {}).items():
        lines.append("")
        lines.append(f"{_method_label(method)}: rmse of mean {row.get('rmse', float('nan')):.3f},")
        lines.append(f"  crps {row.get('crps', float('nan')):.3f}, spread/skill {row.get('spread_skill_ratio', float('nan')):.2f}")
    lines.append("")
    for line in outputs.predictor_lines():
        lines.extend(textwrap.wrap(line, width=60, subsequent_indent="  "))
    ax.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=9, va="top", ha="left", transform=ax.transAxes)
    ax.set_axis_off()
    ax.set_title("Skill on the application selection", loc="left")


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


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
