"""Redraw the figures of a finished run from its saved outputs, without retraining.

A finished run folder (see :func:`condupdate.jobs.run.run`) contains
``config.yaml``, ``predictions.nc``, ``anomalies.nc``, ``training_history.json``,
one skill table per target (``skill.csv``, or ``skill_<target>.csv`` with
several targets) and the saved model in ``model/``. :func:`load_outputs` reads
them, and :func:`redraw` writes every figure from them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml

from condupdate import plot, skill
from condupdate._errors import DataError
from condupdate.update import load_anomalies

__all__ = ["RunOutputs", "load_outputs", "redraw", "write_figures"]

logger = logging.getLogger(__name__)

# Files every finished run contains, besides one skill table per target.
_RUN_FILES = ("config.yaml", "predictions.nc", "anomalies.nc", "training_history.json")

# Known methods in the order figures and tables list them. Other methods follow in file order.
_METHOD_ORDER = ("parent", "child", "child_ensemble", "pattern_scaling")


@dataclass
class RunOutputs:
    """The saved outputs of a finished run, read back into memory by :func:`load_outputs`."""

    run_dir: Path
    config: dict[str, Any]  # contents of config.yaml
    predictions: xr.Dataset  # <target>_truth, <target>_<method>, extrapolation_distance
    anomalies: xr.DataArray  # (subset, parameter) or (member, subset, parameter)
    history: dict[str, Any]  # contents of training_history.json
    skill: dict[str, dict[str, dict[str, float]]]  # per target: method -> column -> value
    ensemble_skill: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    update: Any | None = None  # the fitted ConditionalUpdate from model/, None without model/

    @property
    def targets(self) -> list[str]:
        return list(self.config["data"]["targets"])

    @property
    def split_dim(self) -> str:
        return str(self.config["split"]["dim"])

    @property
    def predictors(self) -> list[str]:
        return json.loads(self.anomalies.attrs["predictors"])

    def target_predictions(self, target: str) -> xr.Dataset:
        """Return the truth, each method's prediction and the distances of one target, with plain names."""
        if target not in self.targets:
            raise DataError(f"target={target!r} is not a target of this run, which has {self.targets}.")
        prefix = f"{target}_"
        names = {
            name: name[len(prefix) :]
            for name in self.predictions.data_vars
            if str(name).startswith(prefix) and not any(str(name).startswith(f"{other}_") for other in self._longer(target))
        }
        ds = self.predictions[list(names)].rename(names)
        for name in ("extrapolation_distance", "predictor_distance", "mahalanobis_distance"):
            if name in self.predictions:
                ds[name] = self.predictions[name]
        return ds

    def _longer(self, target: str) -> list[str]:
        # Targets that extend this one (air and air_temperature): their variables share the prefix.
        return [other for other in self.targets if other != target and other.startswith(f"{target}_")]

    def methods(self, target: str) -> dict[str, xr.DataArray]:
        """Return each method's prediction of ``target``, parent and child first."""
        ds = self.target_predictions(target)
        # NAME_std is the predictive standard deviation of method NAME, not a method.
        found = [
            str(name) for name in ds.data_vars if name != "truth" and not str(name).endswith(("_distance", "_std"))
        ]
        ordered = [m for m in _METHOD_ORDER if m in found] + [m for m in found if m not in _METHOD_ORDER]
        return {m: ds[m] for m in ordered}

    def errors_by_distance(self, target: str) -> tuple[dict[str, xr.DataArray], dict[str, xr.DataArray]]:
        """Return the RMSE of each method per split-dim step, and per member for ensembles.

        Returns empty mappings when the extrapolation distance is not one value
        per step of the split dim (a predictor per grid point or depth).
        """
        ds = self.target_predictions(target)
        if "extrapolation_distance" not in ds or ds.extrapolation_distance.dims != (self.split_dim,):
            return {}, {}
        other = [d for d in ds.truth.dims if d != self.split_dim]
        weights = _weights(ds.truth)
        errors, bands = {}, {}
        for method, prediction in self.methods(target).items():
            if "member" in prediction.dims:
                errors[method] = skill.rmse(prediction.mean("member"), ds.truth, dim=other, weights=weights)
                if prediction.sizes["member"] >= 2:
                    bands[method] = skill.rmse(prediction, ds.truth, dim=other, weights=weights)
            else:
                errors[method] = skill.rmse(prediction, ds.truth, dim=other, weights=weights)
        return errors, bands

    def error_fields(
        self, target: str, methods: Sequence[str] | None = None
    ) -> tuple[dict[str, xr.DataArray], dict[str, xr.DataArray]]:
        """Return the mean absolute error and the mean error of each deterministic method on the map dims.

        The means run over every dim that is not latitude or longitude. The
        fields carry the ``units`` of the truth.
        """
        ds = self.target_predictions(target)
        map_dims = plot._map_dims(ds.truth)
        rest = [d for d in ds.truth.dims if d not in map_dims]
        units = ds.truth.attrs.get("units")
        attrs = {"units": units} if units else {}
        absolute, signed = {}, {}
        for method, prediction in self.methods(target).items():
            if "member" in prediction.dims or (methods is not None and method not in methods):
                continue
            error = prediction - ds.truth
            absolute[method] = abs(error).mean(rest).assign_attrs(attrs)
            signed[method] = error.mean(rest).assign_attrs(attrs)
        return absolute, signed

    def application_predictor(self, name: str | None = None) -> np.ndarray | xr.DataArray | None:
        """Return one predictor's application values, or their range when only that was saved.

        The values come from an ``application_predictor`` variable of
        ``predictions.nc`` (dims ``(predictor, ...)``) when the run wrote one.
        Otherwise the range comes from the ``application_predictor_range`` attr
        of ``extrapolation_distance``, which describes the first predictor only.
        Returns None when neither is there.
        """
        name = self.predictors[0] if name is None else name
        if "application_predictor" in self.predictions.data_vars:
            values = self.predictions["application_predictor"]
            return values.sel(predictor=name) if "predictor" in values.dims else values
        if name != self.predictors[0]:
            return None
        distance = self.predictions.get("extrapolation_distance")
        text = None if distance is None else distance.attrs.get("application_predictor_range")
        if text is None:
            return None
        try:
            low, high = (float(part) for part in str(text).split(".."))
        except ValueError:
            logger.warning("invalid application_predictor_range %r, so no extrapolation range is shaded", text)
            return None
        return np.array([low, high])

    def predictor_lines(self) -> list[str]:
        """Describe each predictor's training and application range and the extrapolation distance."""
        lines = []
        for name in self.predictors:
            coord = self.anomalies[name]
            units = coord.attrs.get("units")
            application = self.application_predictor(name)
            lines.append(f"Predictor {name}" + (f" [{units}]:" if units else ":"))
            lines.append(f"  subsets      {float(coord.min()):.4g} .. {float(coord.max()):.4g}")
            if application is not None:
                values = np.asarray(application, dtype=float)
                lines.append(f"  application  {np.nanmin(values):.4g} .. {np.nanmax(values):.4g}")
        if "extrapolation_distance" in self.predictions:
            distance = self.predictions.extrapolation_distance
            lines.append(f"Extrapolation distance of {self.predictors[0]}")
            lines.append(
                f"  [training std]: min {float(distance.min()):.2f}, mean {float(distance.mean()):.2f}, "
                f"max {float(distance.max()):.2f}"
            )
        return lines

    def description(self, target: str) -> str:
        """Return a one-line title: run name, target, split, predictors and regressor."""
        split = self.config["split"]
        regressor = self.config.get("regressor", {}).get("method", "?")
        return (
            f"Run {self.config.get('name', self.run_dir.name)!r}: {target}, trained on {split['dim']} "
            f"{_selection(split['train'], split.get('labels', False))}, applied to "
            f"{_selection(split['apply'], split.get('labels', False))}; predictors {', '.join(self.predictors)}; "
            f"regressor {regressor}"
        )


def load_outputs(run_dir: str | os.PathLike) -> RunOutputs:
    """Read the saved outputs of a finished run.

    Parameters
    ----------
    run_dir : str or os.PathLike
        Folder written by :func:`condupdate.jobs.run.run`.

    Returns
    -------
    RunOutputs
        Everything in memory, so no file stays open. ``update`` is the fitted
        :class:`~condupdate.update.ConditionalUpdate` of ``model/``, or None
        when ``model/`` is missing (figures then draw a least-squares line in
        place of the weight regressor).

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` or one of the run's files is missing; the message names
        every missing file.
    NotADirectoryError
        If ``run_dir`` is a file.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"Run folder {str(run_dir)!r} not found. Give the output folder of a finished run.")
    if not run_dir.is_dir():
        raise NotADirectoryError(f"Run folder {str(run_dir)!r} is a file. Give the output folder of a finished run.")
    _check_files(run_dir, _RUN_FILES)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    targets = list(config["data"]["targets"])
    tables = {target: _skill_file(run_dir, "skill", target, targets) for target in targets}
    _check_files(run_dir, [path.name for path in tables.values()])

    with xr.open_dataset(run_dir / "predictions.nc") as ds:
        predictions = ds.load()
    history = json.loads((run_dir / "training_history.json").read_text())
    ensemble_skill = {}
    for target in targets:
        path = _skill_file(run_dir, "ensemble_skill", target, targets)
        if path.is_file():
            ensemble_skill[target] = _read_skill_csv(path)

    update = None
    if (run_dir / "model").is_dir():
        from condupdate.bundle import load

        update = load(run_dir / "model").update
    else:
        logger.info("no model folder in %s, so anomaly figures draw a least-squares line", run_dir)

    return RunOutputs(
        run_dir=run_dir,
        config=config,
        predictions=predictions,
        anomalies=load_anomalies(run_dir / "anomalies.nc"),
        history=history,
        skill={target: _read_skill_csv(path) for target, path in tables.items()},
        ensemble_skill=ensemble_skill,
        update=update,
    )


def redraw(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Redraw every figure of a finished run from its saved outputs, without retraining.

    Parameters
    ----------
    run_dir : str or os.PathLike
        Folder written by :func:`condupdate.jobs.run.run`.
    out : str or os.PathLike, optional
        Folder for the PNG files, made if missing. By default ``run_dir``, where
        the figures replace those of the run.

    Returns
    -------
    list of pathlib.Path
        The PNG files written, each atomically (see :func:`condupdate.plot.save_figure`).

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` or one of the run's files is missing; the message names
        every missing file.

    Examples
    --------
    >>> from condupdate.jobs.redraw import redraw
    >>> paths = redraw("runs/warm-future", out="figures")  # doctest: +SKIP
    """
    outputs = load_outputs(run_dir)
    return write_figures(outputs, outputs.run_dir if out is None else Path(out))


def write_figures(outputs: RunOutputs, out: str | os.PathLike) -> list[Path]:
    """Write every figure of a run into ``out`` and return the paths.

    Per target (with a ``_<target>`` suffix when the run has several):
    ``error_vs_distance.png`` (RMSE per split-dim step against extrapolation
    distance, with ensemble bands), ``error_maps.png`` and ``bias_maps.png``
    (time-mean absolute error and error of each deterministic method),
    ``time_series.png`` (area means along the split dim; ``series_<dim>.png``
    when the split dim holds no dates) and ``summary.png``. Once per run:
    ``anomaly_vs_predictor.png`` and ``loss_curves.png``. A figure whose data
    the run lacks (distance not per split-dim step, no latitude-longitude
    grid) is skipped.
    """
    out = Path(out)
    written: list[Path] = []
    split_dim = outputs.split_dim
    for target in outputs.targets:
        suffix = "" if len(outputs.targets) == 1 else f"_{target}"
        ds = outputs.target_predictions(target)
        units = ds.truth.attrs.get("units")

        errors, bands = outputs.errors_by_distance(target)
        if errors:
            fig = plot.skill_vs_distance(ds.extrapolation_distance, errors, bands=bands, units=units)
            fig.axes[0].set_title(f"{target}: RMSE per {split_dim} step applied")
            written.append(plot.save_figure(fig, out / f"error_vs_distance{suffix}.png"))

        if plot._map_dims(ds.truth):
            absolute, signed = outputs.error_fields(target)
            for name, fields, statistic, options in (
                ("error_maps", absolute, "mean absolute error", {}),
                ("bias_maps", signed, "mean error (prediction minus truth)", {"cmap": "RdBu_r", "symmetric": True}),
            ):
                fields = {method.replace("_", " "): error for method, error in fields.items()}
                label = statistic.split(" (")[0] + (f" [{units}]" if units else "")
                fig = plot.error_maps(fields, units=units, label=label, **options)
                fig.suptitle(f"{statistic.capitalize()} of {target} over the application selection")
                written.append(plot.save_figure(fig, out / f"{name}{suffix}.png"))

        fig = plot.time_series(ds.truth, outputs.methods(target), dim=split_dim)
        name = "time_series" if _holds_dates(ds.truth, split_dim) else f"series_{split_dim}"
        written.append(plot.save_figure(fig, out / f"{name}{suffix}.png"))

        written.append(plot.save_figure(plot.summary(outputs, target=target), out / f"summary{suffix}.png"))

    fig = plot.anomaly_vs_predictor(
        outputs.anomalies, regressor=outputs.update, application_predictor=outputs.application_predictor()
    )
    written.append(plot.save_figure(fig, out / "anomaly_vs_predictor.png"))
    written.append(plot.save_figure(plot.loss_curves(outputs.history), out / "loss_curves.png"))
    logger.info("wrote %d figures to %s", len(written), out)
    return written


def _check_files(run_dir: Path, names: Sequence[str]) -> None:
    missing = [name for name in names if not (run_dir / name).is_file()]
    if missing:
        listed = ", ".join(str(run_dir / name) for name in missing)
        raise FileNotFoundError(
            f"{listed} not found, so {str(run_dir)!r} is not a finished condupdate run. A finished run contains "
            f"{', '.join(_RUN_FILES)} and a skill table. Run `condupdate run` first, or give the folder of a finished run."
        )


def _skill_file(run_dir: Path, stem: str, target: str, targets: Sequence[str]) -> Path:
    # One target: skill.csv. Several: skill_<target>.csv, as run() writes them.
    return run_dir / (f"{stem}.csv" if len(targets) == 1 else f"{stem}_{target}.csv")


def _read_skill_csv(path: Path) -> dict[str, dict[str, float]]:
    with open(path, newline="") as handle:
        return {row["method"]: {k: float(v) for k, v in row.items() if k != "method"} for row in csv.DictReader(handle)}


def _weights(field: xr.DataArray) -> xr.DataArray | None:
    try:
        return skill.latitude_weights(field)
    except DataError:
        return None


def _holds_dates(field: xr.DataArray, dim: str) -> bool:
    if dim not in field.coords:
        return False
    values = field[dim].values
    return np.issubdtype(values.dtype, np.datetime64) or (values.size > 0 and hasattr(values.flat[0], "calendar"))


def _selection(value: Any, labels: bool) -> str:
    """Format a split selection: a start and end as ``1860-1979``, labels as a list."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and not labels:
        return f"{value[0]}-{value[1]}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
