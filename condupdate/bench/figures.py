"""Figures of ``condupdate bench``: RMSE per method and case, and each case's error against distance."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from condupdate import skill
from condupdate._errors import DataError
from condupdate.plot import save_figure

__all__ = ["case_error_vs_distance", "rmse_by_method", "write_figures"]

logger = logging.getLogger(__name__)


# The child is orange, the parent grey and every baseline blue.
_METHOD_COLOURS = {"child": "tab:orange", "parent": "tab:grey"}


def rmse_by_method(summary: list[dict[str, object]]) -> Figure:
    """Draw one panel per case: mean RMSE of each method over seeds with its 90 % bootstrap interval.

    Parameters
    ----------
    summary : list of dict
        Rows of ``summary.csv`` (``case``, ``method``, ``rmse_mean``, ``rmse_low``, ``rmse_high``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    cases = list(dict.fromkeys(str(entry["case"]) for entry in summary))
    fig = Figure(figsize=(max(3.2 * len(cases) + 1.0, 6.0), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(cases), 1), squeeze=False)[0])
    for ax, case in zip(axes, cases, strict=False):
        entries = [entry for entry in summary if entry["case"] == case]
        means = np.array([float(e["rmse_mean"]) for e in entries])
        low = np.array([float(e["rmse_low"]) for e in entries])
        high = np.array([float(e["rmse_high"]) for e in entries])
        # Without an interval (one seed) the error bar has length 0.
        errors = np.vstack([np.nan_to_num(means - low), np.nan_to_num(high - means)])
        colours = [_METHOD_COLOURS.get(str(e["method"]), "tab:blue") for e in entries]
        ax.bar(range(len(entries)), means, yerr=errors, color=colours, capsize=3)
        ax.set_xticks(range(len(entries)), [str(e["method"]) for e in entries], rotation=45, ha="right")
        ax.set_title(case)
        ax.set_ylabel("RMSE (target units)")
    fig.suptitle("RMSE on the application selection\n(mean over seeds, 90 % bootstrap interval)")
    return fig


def case_error_vs_distance(predictions: xr.Dataset, distance: xr.DataArray, dim: str, title: str) -> Figure | None:
    """Draw the RMSE of each method per step of ``dim`` against that step's extrapolation distance.

    Returns None when ``distance`` does not vary along ``dim`` (for example a
    predictor given per grid point on another dim).
    """
    if dim not in distance.dims or dim not in predictions.truth.dims:
        return None
    truth = predictions.truth
    others = [d for d in truth.dims if d != dim]
    try:
        weights = skill.latitude_weights(truth)
    except DataError:
        weights = None  # no latitude coordinate: unweighted means
    x = distance.mean([d for d in distance.dims if d != dim]).values

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    order = np.argsort(x)
    for method in ("parent", "child", "nearest_finetune", "linear_baseline", "task_vector", "predictor_input"):
        if method not in predictions:
            continue
        prediction = predictions[method]
        if "member" in prediction.dims:
            prediction = prediction.mean("member")
        error = skill.rmse(prediction, truth, dim=others, weights=weights).values
        ax.plot(x[order], error[order], marker=".", linewidth=2.0 if method == "child" else 1.0, label=method)
    ax.set_xlabel("extrapolation distance [training standard deviations]")
    ax.set_ylabel(f"RMSE per {dim} step [{truth.attrs.get('units', '?')}]")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


def write_figures(summary: list[dict[str, object]], firsts: Mapping[str, tuple], out: Path) -> list[Path]:
    """Write ``rmse_by_method.png`` and, from each case's first seed, ``CASE_error_vs_distance.png`` into ``out``.

    ``firsts`` maps a case name to the predictions (per target), the
    extrapolation distance and the split dim of its first seed.
    """
    paths = [save_figure(rmse_by_method(summary), out / "rmse_by_method.png")]
    for name, (predictions, distance, dim) in firsts.items():
        for target, ds in predictions.items():
            label = name if len(predictions) == 1 else f"{name}_{target}"
            fig = case_error_vs_distance(ds, distance, dim, f"{label}, seed 0")
            if fig is None:
                logger.info("case %s: no error-against-distance figure, the distance is not per split step", label)
                continue
            paths.append(save_figure(fig, out / f"{label}_error_vs_distance.png"))
    return paths
