"""Run a whole conditional weight update from a configuration and write its results."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import torch
import xarray as xr
import yaml

from condupdate import __version__ as condupdate_version
from condupdate import skill
from condupdate._errors import DataError, ExtrapolationWarning
from condupdate._io import atomic_path, check_output_dir, new_sibling_dir, swap_directory
from condupdate.data import Normalizer, select, stack_samples
from condupdate.data.stream import ChunkedSampler, budget_chunk_size, fit_normalizers, train_stream
from condupdate.emulators import MLP, TrainConfig, TrainHistory
from condupdate.bundle import AdaptedEmulator, fingerprint, save
from condupdate.jobs.check import EXTRAPOLATION_THRESHOLD
from condupdate.jobs.checkpoint import Checkpoint
from condupdate.jobs.config import RunConfig
from condupdate.jobs.distributed import UnitRunner, check_cluster_options, open_client
from condupdate.jobs.prepare import Prepared, check_training_values, per_sample, prepare
from condupdate.jobs.redraw import load_outputs, write_figures
from condupdate.update import ConditionalUpdate, save_anomalies
from condupdate.update.regressors import mahalanobis_distance, make_regressor
from condupdate.update.selection import Selection, select_update, write_selection_csv
from condupdate.update.spaces import make_space

__all__ = ["RunResult", "run", "METHODS"]

logger = logging.getLogger(__name__)

METHODS = ("parent", "child", "pattern_scaling", "child_ensemble")


@dataclass
class RunResult:
    """Results of one run: skill, predictions, distance and the fitted update, with files under ``out_dir`` when given."""

    config: RunConfig
    skill: dict[str, xr.Dataset]  # per target: dims (method,), rmse, mae, bias (+ crps, spread_skill_ratio with a Gaussian head)
    predictions: dict[str, xr.Dataset]  # per target: truth, one variable per method (+ METHOD_std with a Gaussian head)
    distance: xr.DataArray  # extrapolation distance of the application predictors
    update: ConditionalUpdate
    emulator: AdaptedEmulator  # what `condupdate.save` writes and `.predict(ds)` uses
    ensemble_skill: dict[str, xr.Dataset] = field(default_factory=dict)  # per target: rmse, crps, spread_skill_ratio
    distances: xr.Dataset | None = None  # with several predictors: distance per predictor and Mahalanobis distance
    application_predictor: xr.DataArray | None = None  # (predictor, sample dims...) of the application selection
    out_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    selection: Selection | None = None  # with update.select: held-out scores of the candidates and the choice


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Return the checkpoint folder of a run that writes to ``out_dir``: ``OUT.checkpoint`` beside it."""
    out = Path(out_dir)
    return out.parent / f"{out.name}.checkpoint"


def _checkpoint_key(config: RunConfig, threads: int) -> dict[str, object]:
    # Everything that changes a unit's result besides its arguments.
    return {
        "config": config.model_dump(mode="json"),
        "threads": threads,
        "condupdate": condupdate_version,
        "torch": torch.__version__,
    }


def _train_config(spec, progress: bool) -> TrainConfig:
    return TrainConfig(**spec.model_dump(), progress=progress)


def _streamed_parent(prep: Prepared, progress: bool) -> tuple[Normalizer, Normalizer, MLP, TrainHistory]:
    # NOTE: trains in this process, without the cluster runner or its checkpoint.
    config = prep.config
    sample_dims = config.data.sample_dims
    required = [f"predictor:{n}" for n in prep.predictors]
    x_norm, y_norm, _ = fit_normalizers(prep.train, prep.features, prep.targets, sample_dims, required)
    sampler = ChunkedSampler(
        prep.train, prep.features, prep.targets, sample_dims, config.data.memory_budget_mb, required, x_norm, y_norm
    )
    parent = MLP(len(prep.features), len(prep.targets), seed=config.training.seed, **config.emulator.model_dump())
    history = train_stream(parent, sampler, _train_config(config.training, progress), description="parent")
    return x_norm, y_norm, parent, history


def _matrices(prep: Prepared, selection: xr.Dataset) -> tuple[xr.DataArray, np.ndarray, np.ndarray, np.ndarray]:
    sample_dims = prep.config.data.sample_dims
    X = stack_samples(selection, prep.features, sample_dims)
    Y = stack_samples(selection, prep.targets, sample_dims).values
    P = stack_samples(selection, [f"predictor:{n}" for n in prep.predictors], sample_dims).values
    return X, np.asarray(X.values, dtype="float64"), np.asarray(Y, dtype="float64"), np.asarray(P, dtype="float64")


def run(
    config: RunConfig,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    dataset: xr.Dataset | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: object | None = None,
    retries: int = 2,
    threads: int = 1,
) -> RunResult:
    """Train the parent, fine-tune per subset, regress the anomalies and score the child.

    The parent training and each (subset, member) fine-tune are units of work.
    They run in this process, or on dask.distributed workers with ``workers``,
    ``scheduler`` or ``client`` (at most one of the three). With ``out_dir``,
    each finished unit is saved to the checkpoint folder ``OUT.checkpoint``
    beside it. Running the same configuration again loads the finished units
    instead of computing them, and the folder is deleted once the results are
    in place. A checkpoint of another configuration is rejected with
    :class:`ConfigError`.

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
    dataset : xarray.Dataset, optional
        Data to use instead of the files in ``config.data.paths``, for example a
        Dataset already open in a notebook.
    workers : int, optional
        Start a dask ``LocalCluster`` of this many worker processes (one thread
        each, on 127.0.0.1) when the first unit needs computing, and close it at the end.
    scheduler : str, optional
        Address of a running dask scheduler, for example one started by dask-jobqueue.
    client : distributed.Client, optional
        A client to submit the units to, for example one shared by several runs.
    retries : int, default 2
        Extra attempts for a unit that raises. When a unit fails on every
        attempt, the other units still finish and are checkpointed, and then
        :class:`condupdate.jobs.distributed.UnitFailedError` lists the failed units.
    threads : int, default 1
        torch threads inside each unit. Results are bit-identical between runs
        (serial, distributed or resumed) with the same value.

    Returns
    -------
    RunResult
    """
    check_cluster_options(workers, scheduler)
    if client is not None and (workers is not None or scheduler is not None):
        raise ValueError("Give at most one of client, workers and scheduler.")
    with contextlib.ExitStack() as stack:
        connect = None
        if workers is not None or scheduler is not None:
            # The cluster starts only when a unit needs computing: invalid input
            # fails before any worker starts, and a run resumed from a complete
            # checkpoint starts none.
            connect = lambda: stack.enter_context(open_client(workers=workers, scheduler=scheduler))  # noqa: E731
        runner = UnitRunner(client=client, connect=connect, retries=retries, threads=threads, progress=progress)
        return _run(config, out_dir, overwrite, progress, dataset, runner)


def _run(
    config: RunConfig,
    out_dir: str | Path | None,
    overwrite: bool,
    progress: bool,
    dataset: xr.Dataset | None,
    runner: UnitRunner,
) -> RunResult:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(config.training.seed)

    # Phase 1: data, split, subsets and predictors (statistics from training data only).
    # Inputs are opened lazily before the output folder is made, so a bad file or
    # variable name leaves no empty folder behind.
    streamed = config.data.memory_budget_mb is not None
    with dask.config.set(budget_chunk_size(config.data.memory_budget_mb) if streamed else {}):
        prep = prepare(config, dataset)
    if out_dir is not None:
        _check_replaceable(Path(out_dir), overwrite)
    sample_dims = config.data.sample_dims
    if streamed:
        # Statistics come from a dask map-reduce and the parent from blocks read
        # within the budget. The matrices loaded below serve the fine-tuning only.
        tic = time.perf_counter()
        x_norm, y_norm, parent, parent_history = _streamed_parent(prep, progress)
        timings["parent_s"] = time.perf_counter() - tic
    X_train_da, X_train, Y_train, P_train = _matrices(prep, prep.train)
    labels = per_sample(prep.subsets, prep.train, sample_dims)
    valid = check_training_values(prep, X_train, Y_train, P_train, labels)
    if not valid.any():
        raise DataError("No complete training sample: every sample has a NaN input, target or predictor.")
    if not streamed:
        x_norm = Normalizer().fit(X_train_da.isel(sample=np.flatnonzero(valid)))
        y_norm = Normalizer().fit(
            stack_samples(prep.train, prep.targets, sample_dims).isel(sample=np.flatnonzero(valid))
        )
    Xn, Yn = x_norm.transform(X_train[valid]), y_norm.transform(Y_train[valid])
    timings["prepare_s"] = time.perf_counter() - start - timings.get("parent_s", 0.0)

    # Phase 2: the parent on the whole training selection.
    tic = time.perf_counter()
    if out_dir is not None:
        runner.checkpoint = Checkpoint(checkpoint_dir(out_dir), _checkpoint_key(config, runner.threads)).open()
    # Epoch progress bars only in process: on workers they would go to the workers' logs.
    unit_progress = progress and runner.client is None and runner.connect is None
    if not streamed:
        parent = MLP(len(prep.features), len(prep.targets), seed=config.training.seed, **config.emulator.model_dump())
        parent_history = runner.train(parent, Xn, Yn, _train_config(config.training, unit_progress), description="parent")
        timings["parent_s"] = time.perf_counter() - tic

    # Phase 3: forgetful fine-tuning per subset, then the weight regression.
    tic = time.perf_counter()
    subset_rows = []
    predictor_known = np.isfinite(P_train).all(1)
    for label in dict.fromkeys(labels[valid]):
        rows = labels[valid] == label
        # The subset's predictor describes the whole subset, so it averages every
        # sample with a known predictor, masked targets included.
        subset_predictor = P_train[(labels == label) & predictor_known].mean(0)
        subset_rows.append((str(label), Xn[rows], Yn[rows], subset_predictor))
    subset_predictors = np.stack([p for *_, p in subset_rows])
    flat = np.ptp(subset_predictors, axis=0) == 0
    if flat.any():
        names = [n for n, f in zip(prep.predictors, flat, strict=True) if f]
        raise DataError(
            f"Predictors {names} take the same value ({subset_predictors[0, flat].tolist()}) in every subset, so "
            "the weight regression has nothing to learn from them; choose a predictor that varies between "
            f"subsets (subsets are {config.subsets.method} along {config.subsets.dim or config.split.dim!r})."
        )
    spec = config.update
    regressor = make_regressor(config.regressor.method, **config.regressor.params)
    selection = None
    if spec.select is not None:
        # Parameters and regressor chosen on the training subsets alone, by
        # pseudo-extrapolation towards the application predictors (never its targets).
        tic_select = time.perf_counter()
        application_means = [float(prep.apply[f"predictor:{n}"].mean()) for n in prep.predictors]
        selection = select_update(config, parent, Xn, Yn, P_train[valid], labels[valid], subset_predictors, application_means)
        config, spec, regressor = selection.config, selection.config.update, selection.regressor()
        timings["selection_s"] = time.perf_counter() - tic_select
    update = ConditionalUpdate(
        parent,
        regressor,
        _train_config(config.finetune, unit_progress),
        space=make_space(spec.parameters, n_layers=spec.n_layers, rank=spec.rank, seed=config.finetune.seed),
        members=spec.members,
        snr_threshold=spec.snr_threshold,
        engine=spec.engine,
    )
    update.fit_anomalies(
        [(label, X, Y) for label, X, Y, _ in subset_rows],
        subset_predictors,
        prep.predictors,
        map_units=runner.map,
    ).fit_regressor()
    # A resumed run is logged without -v, because earlier work was reused.
    log = logger.warning if runner.loaded_ else logger.info
    log("run %s: %d units loaded from checkpoint, %d computed", config.name, runner.loaded_, runner.computed_)
    for name in prep.predictors:
        # Predictor coordinates of the anomaly store carry the predictor's units.
        attrs = prep.train[f"predictor:{name}"].attrs
        update.anomalies_[name].attrs.update({k: attrs[k] for k in ("units", "long_name") if k in attrs})
    variables = {name: dict(prep.dataset[name].attrs) for name in _input_variables(config) + prep.targets}
    adapted = AdaptedEmulator(
        config, update, x_norm, y_norm, prep.climatology, variables, fingerprint(X_train[valid], Y_train[valid])
    )
    # Phases do not overlap: the selection is timed on its own.
    timings["finetune_s"] = time.perf_counter() - tic - timings.get("selection_s", 0.0)

    # Phase 4: predict the application selection from its inputs alone, with parent,
    # child (and child ensemble) and pattern scaling.
    tic = time.perf_counter()
    split = config.split
    apply_raw = select(prep.dataset, split.dim, split.apply if split.labels else tuple(split.apply))
    outputs = {"parent": adapted.predict(apply_raw, method="parent"), "child": adapted.predict(apply_raw)}
    if spec.ensemble != "none":
        outputs["child_ensemble"] = adapted.predict(apply_raw, ensemble=spec.ensemble, n_samples=spec.n_samples)

    predictions = {}
    for target in prep.targets:
        truth = prep.apply[target]
        ds = xr.Dataset({"truth": truth})
        for method, values in outputs.items():
            ds[method] = values[target].transpose(..., *truth.dims).assign_coords({d: truth[d] for d in truth.dims})
        baseline = _pattern_scaling(prep, target)
        if baseline is not None:
            ds["pattern_scaling"] = baseline
        for method in ds.data_vars:
            if method != "truth":
                ds[method].attrs = _prediction_attrs(truth, method)
        for method, values in outputs.items():
            # A Gaussian head also predicts a standard deviation: METHOD_std beside METHOD.
            if f"{target}_std" in values:
                std = values[f"{target}_std"].transpose(..., *truth.dims).assign_coords({d: truth[d] for d in truth.dims})
                ds[f"{method}_std"] = std.assign_attrs(_std_attrs(truth, method))
        predictions[target] = ds.compute()
    timings["predict_s"] = time.perf_counter() - tic

    # Phase 5: skill and extrapolation distance.
    first = f"predictor:{prep.predictors[0]}"
    distance = skill.extrapolation_distance(prep.apply[first], prep.train[first]).compute()
    distance.name = "extrapolation_distance"
    applied = prep.apply[first]
    distance.attrs["application_predictor_range"] = f"{float(applied.min()):.6g} .. {float(applied.max()):.6g}"
    distances = _predictor_distances(prep) if len(prep.predictors) > 1 else None
    largest = {prep.predictors[0]: float(distance.max())}
    if distances is not None:
        per_predictor = distances.extrapolation_distance
        per_predictor = per_predictor.max([d for d in per_predictor.dims if d != "predictor"])
        largest = {str(p): float(v) for p, v in zip(per_predictor["predictor"].values, per_predictor.values, strict=True)}
    for name, value in largest.items():
        # Predictors are never clipped: the child is evaluated where the user asked.
        if value > EXTRAPOLATION_THRESHOLD:
            warnings.warn(
                f"Application predictor {name!r} lies up to {value:.2f} training standard deviations beyond its "
                f"training range (threshold {EXTRAPOLATION_THRESHOLD:g}); the child extrapolates there without "
                "clipping, so check the skill against the extrapolation distance.",
                ExtrapolationWarning,
                stacklevel=3,  # the caller of run(), which calls _run()
            )
    scores, ensemble_scores = {}, {}
    for target, ds in predictions.items():
        weights = _weights(ds.truth)
        methods = {m: ds[m] for m in METHODS if m in ds and "member" not in ds[m].dims}
        std = {m: ds[f"{m}_std"] for m in methods if f"{m}_std" in ds}
        table = skill.skill_table(ds.truth, methods, weights=weights, std=std or None)
        scores[target] = table.reset_coords(drop=True).compute()
        if "child_ensemble" in ds:
            table = skill.ensemble_skill_table(ds.truth, {"child_ensemble": ds.child_ensemble}, weights=weights)
            ensemble_scores[target] = table.reset_coords(drop=True).compute()
    timings["total_s"] = time.perf_counter() - start

    index = pd.Index(prep.predictors, name="predictor")
    application_predictor = xr.concat(
        [prep.apply[f"predictor:{n}"].reset_coords(drop=True) for n in prep.predictors], dim=index
    ).compute()
    result = RunResult(
        config, scores, predictions, distance, update, adapted, ensemble_scores, distances, application_predictor, None, timings
    )
    result.selection = selection
    if out_dir is not None:
        # Everything is written to a hidden folder first and swapped in at the end,
        # so an interrupted or failed run leaves the earlier results untouched.
        out = Path(out_dir)
        tmp = new_sibling_dir(out)
        try:
            _write_outputs(result, tmp, parent_history)
            swap_directory(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        result.out_dir = out
        # Only now are the finished units no longer needed to resume.
        runner.checkpoint.remove()
    return result


# Files that mark a folder as condupdate results, which --overwrite may replace.
_RESULT_MARKERS = ("config.yaml", "timings.json")


def _predictor_distances(prep: Prepared) -> xr.Dataset:
    """Distance of each application sample beyond the training range, per predictor and jointly.

    The joint distance is the Mahalanobis distance to the training samples'
    predictors, which accounts for their correlation: a combination of predictors
    never seen together in training is far even when each lies inside its range.
    """
    names = prep.predictors
    index = pd.Index(names, name="predictor")
    train = xr.concat([prep.train[f"predictor:{n}"].reset_coords(drop=True) for n in names], dim=index)
    apply = xr.concat([prep.apply[f"predictor:{n}"].reset_coords(drop=True) for n in names], dim=index)
    per_predictor = skill.extrapolation_distance(apply, train).compute()

    sample_dims = [d for d in apply.dims if d != "predictor"]
    train_rows = train.stack(_s=[d for d in train.dims if d != "predictor"]).transpose("_s", "predictor").values
    train_rows = train_rows[np.isfinite(train_rows).all(1)]
    apply_flat = apply.stack(_s=sample_dims).transpose("_s", "predictor")
    rows = apply_flat.values
    joint = np.full(len(rows), np.nan)
    ok = np.isfinite(rows).all(1)
    joint[ok] = mahalanobis_distance(rows[ok], train_rows)
    mahalanobis = xr.DataArray(joint, dims="_s", coords={"_s": apply_flat["_s"]}).unstack("_s").transpose(*sample_dims)
    return xr.Dataset(
        {
            "extrapolation_distance": per_predictor,
            "mahalanobis_distance": mahalanobis.assign_attrs(units="1", long_name="Mahalanobis distance to the training predictors"),
        }
    )


def _history(history) -> dict[str, object]:
    return {"train_loss": history.train_loss, "val_loss": history.val_loss, "best_epoch": history.best_epoch}


def _prediction_attrs(truth: xr.DataArray, method: str) -> dict[str, str]:
    # Only the physical description carries over: provenance attributes of the
    # truth (source, grid_mapping, model ids) would misdescribe an emulator output.
    attrs = {k: truth.attrs[k] for k in ("standard_name", "units") if k in truth.attrs}
    attrs["long_name"] = f"{truth.attrs.get('long_name', truth.name)} predicted by {method.replace('_', ' ')}"
    return attrs


def _std_attrs(truth: xr.DataArray, method: str) -> dict[str, str]:
    attrs = {"units": truth.attrs["units"]} if "units" in truth.attrs else {}
    attrs["long_name"] = (
        f"standard deviation of {truth.attrs.get('long_name', truth.name)} predicted by {method.replace('_', ' ')}"
    )
    return attrs


def _check_replaceable(out: Path, overwrite: bool) -> None:
    check_output_dir(out, overwrite=overwrite)
    if overwrite and out.is_dir() and any(out.iterdir()):
        if not all((out / name).is_file() for name in _RESULT_MARKERS):
            raise FileExistsError(
                f"Output folder {str(out)!r} is not empty and holds no condupdate results "
                f"({', '.join(_RESULT_MARKERS)} missing), so --overwrite will not replace it; choose another --out."
            )


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


def _input_variables(config: RunConfig) -> list[str]:
    return sorted({spec.variable for spec in config.data.inputs if spec.variable is not None})


def _write_outputs(result: RunResult, out: Path, parent_history) -> None:
    config = result.config
    split_dim = config.split.dim

    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    save_anomalies(result.update.anomalies_, out / "anomalies.nc")
    if result.selection is not None:
        write_selection_csv(result.selection, out / "selection.csv")
    for target, table in result.skill.items():
        suffix = "" if len(result.skill) == 1 else f"_{target}"
        # Runs with a Gaussian head also score the predicted spread.
        columns = [c for c in ("rmse", "mae", "bias", "crps", "spread_skill_ratio") if c in table.data_vars]
        skill.write_skill_csv(table, out / f"skill{suffix}.csv", columns=columns)
        with atomic_path(out / f"skill{suffix}.nc") as tmp:
            table.to_netcdf(tmp)
        if target in result.ensemble_skill:
            skill.write_skill_csv(
                result.ensemble_skill[target], out / f"ensemble_skill{suffix}.csv", columns=("rmse", "crps", "spread_skill_ratio")
            )
    predictions = xr.merge(
        [ds.rename({v: f"{target}_{v}" for v in ds.data_vars}) for target, ds in result.predictions.items()]
    )
    predictions["extrapolation_distance"] = result.distance
    predictions["application_predictor"] = result.application_predictor
    if result.distances is not None:
        predictions["predictor_distance"] = result.distances.extrapolation_distance
        predictions["mahalanobis_distance"] = result.distances.mahalanobis_distance
    if "member" in result.update.anomalies_.dims:
        with atomic_path(out / "signal_to_noise.nc") as tmp:
            result.update.signal_to_noise().to_netcdf(tmp)
    for name in predictions.variables:
        # Drop references to variables that are not in this file.
        for key in ("bounds", "grid_mapping"):
            predictions[name].attrs.pop(key, None)
            predictions[name].encoding.pop(key, None)
    predictions.attrs = {
        "title": f"condupdate predictions of run {config.name!r} on the application selection",
        "split": f"train {config.split.train} apply {config.split.apply} along {config.split.dim}",
        "predictors": ", ".join(result.emulator.predictors),
        "regressor": config.regressor.method,
        "history": f"written by condupdate {condupdate_version}",
    }
    with atomic_path(out / "predictions.nc") as tmp:
        predictions.to_netcdf(tmp)

    # The whole adapted emulator, loadable with condupdate.load(OUT / "model").
    save(result.emulator, out / "model", overwrite=True)
    with atomic_path(out / "training_history.json") as tmp:
        tmp.write_text(json.dumps({
            "parent": _history(parent_history),
            "finetune": {k: _history(h) for k, h in result.update.histories_.items()},
        }))
    with atomic_path(out / "timings.json") as tmp:
        tmp.write_text(json.dumps(result.timings, indent=2))

    # Figures, drawn from the files just written, exactly as `condupdate plot` redraws them.
    write_figures(load_outputs(out), out)
