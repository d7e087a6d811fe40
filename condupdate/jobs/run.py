"""Run a whole conditional weight update from a configuration and write its results."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import yaml

from condupdate import plot, skill
from condupdate._errors import DataError
from condupdate._io import atomic_path, prepare_output_dir
from condupdate.data import Normalizer, stack_samples
from condupdate.emulators import MLP, TrainConfig, train
from condupdate.jobs.config import RunConfig
from condupdate.jobs.prepare import Prepared, per_sample, prepare
from condupdate.update import ConditionalUpdate, WeightRegressor, save_anomalies

__all__ = ["RunResult", "run", "METHODS"]

logger = logging.getLogger(__name__)

METHODS = ("parent", "child", "pattern_scaling")


@dataclass
class RunResult:
    """Results of one run: skill, predictions, distance and the fitted update, with files under ``out_dir`` when given."""

    config: RunConfig
    skill: dict[str, xr.Dataset]  # per target: dims (method,), variables rmse, mae, bias
    predictions: dict[str, xr.Dataset]  # per target: truth and one variable per method
    distance: xr.DataArray  # extrapolation distance of the application predictors
    update: ConditionalUpdate
    out_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _train_config(spec, progress: bool) -> TrainConfig:
    return TrainConfig(**spec.model_dump(), progress=progress)


def _matrices(prep: Prepared, selection: xr.Dataset) -> tuple[xr.DataArray, np.ndarray, np.ndarray, np.ndarray]:
    sample_dims = prep.config.data.sample_dims
    X = stack_samples(selection, prep.features, sample_dims)
    Y = stack_samples(selection, prep.targets, sample_dims).values
    P = stack_samples(selection, [f"predictor:{n}" for n in prep.predictors], sample_dims).values
    return X, np.asarray(X.values, dtype="float64"), np.asarray(Y, dtype="float64"), np.asarray(P, dtype="float64")


def run(config: RunConfig, out_dir: str | Path | None = None, overwrite: bool = False, progress: bool = False) -> RunResult:
    """Train the parent, fine-tune per subset, regress the anomalies and score the child.

    Parameters
    ----------
    config : RunConfig
        A validated configuration (see :func:`condupdate.jobs.config.load_config`).
    out_dir : path, optional
        Folder for ``skill.csv``, ``anomalies.nc``, ``predictions.nc``, the model
        and figures. A non-empty folder is refused unless ``overwrite`` is true.
    overwrite : bool
        Replace results in a non-empty ``out_dir``.
    progress : bool
        Show progress bars.

    Returns
    -------
    RunResult
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(config.training.seed)

    # Phase 1: data, split, subsets and predictors (statistics from training data only).
    # Inputs are opened lazily before the output folder is made, so a bad file or
    # variable name leaves no empty folder behind.
    prep = prepare(config)
    out = prepare_output_dir(out_dir, overwrite=overwrite) if out_dir is not None else None
    sample_dims = config.data.sample_dims
    X_train_da, X_train, Y_train, P_train = _matrices(prep, prep.train)
    labels = per_sample(prep.subsets, prep.train, sample_dims)
    valid = np.isfinite(X_train).all(1) & np.isfinite(Y_train).any(1) & np.isfinite(P_train).all(1)
    if not valid.any():
        raise DataError("No complete training sample: every sample has a NaN input, target or predictor.")
    x_norm = Normalizer().fit(X_train_da.isel(sample=np.flatnonzero(valid)))
    y_norm = Normalizer().fit(
        stack_samples(prep.train, prep.targets, sample_dims).isel(sample=np.flatnonzero(valid))
    )
    Xn, Yn = x_norm.transform(X_train[valid]), y_norm.transform(Y_train[valid])
    timings["prepare_s"] = time.perf_counter() - start

    # Phase 2: the parent on the whole training selection.
    tic = time.perf_counter()
    parent = MLP(len(prep.features), len(prep.targets), seed=config.training.seed, **config.emulator.model_dump())
    parent_history = train(parent, Xn, Yn, _train_config(config.training, progress), description="parent")
    timings["parent_s"] = time.perf_counter() - tic

    # Phase 3: forgetful fine-tuning per subset, then the weight regression.
    tic = time.perf_counter()
    subset_rows = []
    for label in dict.fromkeys(labels[valid]):
        rows = labels[valid] == label
        subset_rows.append((str(label), Xn[rows], Yn[rows], P_train[valid][rows].mean(0)))
    update = ConditionalUpdate(
        parent,
        WeightRegressor(method=config.regressor.method),
        _train_config(config.finetune, progress),
    ).fit(
        [(label, X, Y) for label, X, Y, _ in subset_rows],
        np.stack([p for *_, p in subset_rows]),
        prep.predictors,
    )
    timings["finetune_s"] = time.perf_counter() - tic

    # Phase 4: predict the application selection with parent, child and pattern scaling.
    tic = time.perf_counter()
    X_apply_da, X_apply, _, P_apply = _matrices(prep, prep.apply)
    ok = np.isfinite(X_apply).all(1) & np.isfinite(P_apply).all(1)
    Xa = torch.as_tensor(x_norm.transform(X_apply[ok]), dtype=torch.float32)
    with torch.no_grad():
        parent_out = y_norm.inverse_transform(parent(Xa).numpy().astype("float64"))
    child_out = y_norm.inverse_transform(update.predict(Xa.numpy(), P_apply[ok]).astype("float64"))

    predictions = {}
    for j, target in enumerate(prep.targets):
        truth = prep.apply[target]
        ds = xr.Dataset({"truth": truth})
        for method, values in (("parent", parent_out), ("child", child_out)):
            ds[method] = _unstack(values[:, j], ok, X_apply_da, truth)
        baseline = _pattern_scaling(prep, target)
        if baseline is not None:
            ds["pattern_scaling"] = baseline
        predictions[target] = ds.compute()
    timings["predict_s"] = time.perf_counter() - tic

    # Phase 5: skill and extrapolation distance.
    first = f"predictor:{prep.predictors[0]}"
    distance = skill.extrapolation_distance(prep.apply[first], prep.train[first]).compute()
    distance.name = "extrapolation_distance"
    scores = {}
    for target, ds in predictions.items():
        weights = _weights(ds.truth)
        methods = {m: ds[m] for m in METHODS if m in ds}
        scores[target] = skill.skill_table(ds.truth, methods, weights=weights).reset_coords(drop=True).compute()
    timings["total_s"] = time.perf_counter() - start

    result = RunResult(config, scores, predictions, distance, update, out, timings)
    if out is not None:
        _write_outputs(result, prep, parent, x_norm, y_norm, parent_history)
    return result


def _unstack(values: np.ndarray, ok: np.ndarray, stacked: xr.DataArray, like: xr.DataArray) -> xr.DataArray:
    full = np.full(ok.shape, np.nan)
    full[ok] = values
    flat = xr.DataArray(full, dims="sample", coords={"sample": stacked["sample"]})
    out = flat.unstack("sample").transpose(*like.dims)
    out = out.assign_coords({d: like[d] for d in like.dims})
    return out.assign_attrs(like.attrs)


def _pattern_scaling(prep: Prepared, target: str) -> xr.DataArray | None:
    split_dim = prep.config.split.dim
    predictor = prep.train[f"predictor:{prep.predictors[0]}"]
    if predictor.dims != (split_dim,):
        # NOTE: pattern scaling needs one predictor value per step of the split dim;
        # a predictor on other dims (per grid point, per depth) has no such baseline yet.
        logger.info("pattern scaling skipped: predictor %s has dims %s", prep.predictors[0], predictor.dims)
        return None
    model = skill.PatternScaling(dim=split_dim).fit(prep.train[target], predictor)
    return model.predict(prep.apply[f"predictor:{prep.predictors[0]}"]).transpose(*prep.apply[target].dims)


def _weights(field: xr.DataArray) -> xr.DataArray | None:
    try:
        return skill.latitude_weights(field)
    except DataError:
        return None


def _write_outputs(result, prep, parent, x_norm, y_norm, parent_history) -> None:
    out = result.out_dir
    config = result.config
    split_dim = config.split.dim

    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    save_anomalies(result.update.anomalies_, out / "anomalies.nc")
    for target, table in result.skill.items():
        name = "skill.csv" if len(result.skill) == 1 else f"skill_{target}.csv"
        skill.write_skill_csv(table, out / name)
        with atomic_path(out / name.replace(".csv", ".nc")) as tmp:
            table.to_netcdf(tmp)
    predictions = xr.merge(
        [ds.rename({v: f"{target}_{v}" for v in ds.data_vars}) for target, ds in result.predictions.items()]
    )
    predictions["extrapolation_distance"] = result.distance
    with atomic_path(out / "predictions.nc") as tmp:
        predictions.to_netcdf(tmp)

    # The model: weights and normalisers in a file torch loads with weights_only=True.
    model_dir = out / "model"
    model_dir.mkdir(exist_ok=True)
    bundle = {
        "state_dict": parent.state_dict(),
        "emulator": parent.config,
        "features": prep.features,
        "targets": prep.targets,
        "predictors": prep.predictors,
        "input_normalizer": x_norm.to_dict(),
        "target_normalizer": y_norm.to_dict(),
        "parent_history": {"train_loss": parent_history.train_loss, "val_loss": parent_history.val_loss},
    }
    with atomic_path(model_dir / "parent.pt") as tmp:
        torch.save(bundle, tmp)
    regressor = result.update.regressor_.pipeline_
    with atomic_path(model_dir / "regressor.json") as tmp:
        # The fitted linear map in plain numbers: standardise predictors, then coef and intercept.
        scaler, linear = regressor.steps[0][1], regressor.steps[-1][1]
        tmp.write_text(json.dumps({
            "method": config.regressor.method,
            "alpha": result.update.regressor_.alpha_,
            "predictor_mean": scaler.mean_.tolist(),
            "predictor_scale": scaler.scale_.tolist(),
            "coef": np.asarray(linear.coef_).tolist(),
            "intercept": np.asarray(linear.intercept_).tolist(),
        }))
    with atomic_path(out / "timings.json") as tmp:
        tmp.write_text(json.dumps(result.timings, indent=2))

    # Figures.
    for target, ds in result.predictions.items():
        suffix = "" if len(result.predictions) == 1 else f"_{target}"
        methods = [m for m in METHODS if m in ds]
        units = ds.truth.attrs.get("units")
        weights = _weights(ds.truth)
        other = [d for d in ds.truth.dims if d != split_dim]
        if result.distance.dims == (split_dim,):
            errors = {m: skill.rmse(ds[m], ds.truth, dim=other, weights=weights) for m in methods}
            fig = plot.error_vs_distance(result.distance, errors, units=units)
            plot.save_figure(fig, out / f"error_vs_distance{suffix}.png")
        if len(other) == 2:
            maps = {m: abs(ds[m] - ds.truth).mean(split_dim).assign_attrs(units=units) for m in methods}
            fig = plot.error_maps(maps, units=units)
            fig.suptitle(f"Time-mean absolute error of {target}, application selection")
            plot.save_figure(fig, out / f"error_maps{suffix}.png")
