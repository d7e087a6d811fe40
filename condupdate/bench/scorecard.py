"""``condupdate bench``: every use case with several seeds, the child against every baseline.

Each case of :data:`condupdate.bench.cases.CASES` whose configuration file
exists runs once per seed. Seed ``s`` adds ``s`` to the configuration's
training and fine-tuning seeds. A run gives the parent and the child, and
:mod:`condupdate.bench.baselines` adds the baselines on the same split. Every
method is scored on the application selection, area-weighted by cos(latitude)
where the data have a latitude coordinate.

Predictions of a method ``M`` may come with a probabilistic companion, which
fills the ``crps`` column. A variable ``M_std`` is the standard deviation of a
Gaussian predictive distribution, in the target's units. A variable
``M_ensemble`` with a ``member`` dim, or a ``member`` dim on ``M`` itself, is an
ensemble, and ``M`` is then scored on its member mean. Without a companion
``crps`` is empty.

Intervals are 90 % percentile bootstrap intervals of the mean over seeds from
``scipy.stats.bootstrap`` (9999 resamples, seeded); with one seed they are empty.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from condupdate import skill
from condupdate._errors import DataError, ExtrapolationWarning
from condupdate._io import atomic_path, check_output_dir, new_sibling_dir, swap_directory
from condupdate.bench.cases import CASES, Case, configs_dir
from condupdate.jobs.config import RunConfig, load_config, parse_config

__all__ = [
    "BenchResult",
    "HEADER",
    "METHODS",
    "bootstrap_interval",
    "crps_gaussian",
    "load_case_config",
    "run_bench",
    "score_method",
    "select_cases",
]

logger = logging.getLogger(__name__)

HEADER = ("case", "method", "seed", "rmse", "mae", "bias", "crps", "extrapolation_distance")
METHODS = ("parent", "child", "nearest_finetune", "linear_baseline", "task_vector", "predictor_input")
SCORES = ("rmse", "mae", "bias", "crps")
CONFIDENCE = 0.9
DEFAULT_SEEDS = 5
QUICK_SEEDS = 2
_SUMMARY_HEADER = (
    "case", "method", "n_seeds",
    *(f"{score}_{part}" for score in SCORES for part in ("mean", "low", "high")),
    "extrapolation_distance",
)
_GAINS_HEADER = ("case", "versus", "baseline", "gain_mean", "gain_low", "gain_high")
# A file that marks a folder as bench results, which --overwrite may replace.
_MARKER = "bench.csv"


@dataclass
class BenchResult:
    """Scores of every case, method and seed, their summary, and the cases skipped or failed."""

    rows: list[dict[str, object]]  # one per (case, method, seed), keys HEADER
    summary: list[dict[str, object]]  # one per (case, method), keys _SUMMARY_HEADER
    gains: list[dict[str, object]]  # per case: the child against the parent and the best baseline
    skipped: dict[str, str] = field(default_factory=dict)  # case -> reason
    failed: dict[str, str] = field(default_factory=dict)  # case -> error
    out_dir: Path | None = None


# --------------------------------------------------------------------------- #
# Cases and their configurations
# --------------------------------------------------------------------------- #


def select_cases(names: Sequence[str] | None = None) -> list[Case]:
    """Return the registered cases named in ``names`` (all when None), in registry order.

    Raises
    ------
    ValueError
        If a name is not registered.
    """
    if names is None:
        return list(CASES.values())
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise ValueError(f"Unknown case {unknown} (--cases); registered cases: {', '.join(CASES)}.")
    return [case for name, case in CASES.items() if name in names]


def _merge(base: dict, overrides: dict) -> dict:
    # Nested dicts merge key by key; any other value replaces the base value.
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_case_config(case: Case, quick: bool = False, folder: Path | None = None) -> RunConfig:
    """Read a case's configuration and apply its ``quick`` overrides when ``quick`` is true.

    Raises
    ------
    FileNotFoundError
        If the configuration file is missing.
    ConfigError
        If the file, or the file with the overrides, is not a valid configuration.
    """
    path = (folder or configs_dir()) / case.config
    config = load_config(path)
    if quick and case.quick:
        raw = _merge(config.model_dump(mode="json"), case.quick)
        config = parse_config(raw, source=f"{str(path)!r} with the quick overrides of case {case.name!r}")
    return config


def _with_seed(config: RunConfig, seed: int) -> RunConfig:
    return config.model_copy(
        update={
            "training": config.training.model_copy(update={"seed": config.training.seed + seed}),
            "finetune": config.finetune.model_copy(update={"seed": config.finetune.seed + seed}),
        }
    )


# --------------------------------------------------------------------------- #
# Scores
# --------------------------------------------------------------------------- #


def _crps_gaussian_kernel(truth: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    import properscoring

    valid = np.isfinite(truth) & np.isfinite(mean) & np.isfinite(std)
    out = np.full(np.shape(truth), np.nan)
    out[valid] = properscoring.crps_gaussian(truth[valid], mean[valid], std[valid])
    return out


def crps_gaussian(
    mean: xr.DataArray, std: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray | None = None
) -> float:
    """Return the continuous ranked probability score of Gaussian predictions, averaged over all cells.

    The score of each cell is ``properscoring.crps_gaussian``, the closed form of
    the CRPS for a normal distribution. Cells where the truth, the mean or the
    standard deviation is NaN are left out.

    Parameters
    ----------
    mean, std, truth : xarray.DataArray
        Predictive mean and standard deviation and the truth, on the same coords,
        in one unit (for example [m s-1]).
    weights : xarray.DataArray, optional
        Area weights, as in :func:`condupdate.skill.rmse`.

    Examples
    --------
    >>> import xarray as xr
    >>> truth = xr.DataArray([0.0, 0.0], dims="x")
    >>> round(crps_gaussian(truth, truth + 1.0, truth), 4)  # 1 * (sqrt(2) - 1) / sqrt(pi)
    0.2337
    """
    mean, std, truth = xr.align(mean, std, truth, join="exact")
    cell = xr.apply_ufunc(_crps_gaussian_kernel, truth, mean, std, dask="parallelized", output_dtypes=[float])
    if weights is not None:
        return float(cell.weighted(weights.fillna(0)).mean(skipna=True))
    return float(cell.mean(skipna=True))


def _weights(truth: xr.DataArray) -> xr.DataArray | None:
    try:
        return skill.latitude_weights(truth)
    except DataError:
        return None


def score_method(
    truth: xr.DataArray,
    prediction: xr.DataArray,
    std: xr.DataArray | None = None,
    ensemble: xr.DataArray | None = None,
    weights: xr.DataArray | None = None,
) -> dict[str, float]:
    """Score one method: RMSE, MAE and bias, and the CRPS when it has a distribution.

    Parameters
    ----------
    truth, prediction : xarray.DataArray
        On the same coords. A ``member`` dim on ``prediction`` makes it an
        ensemble, scored on its member mean.
    std : xarray.DataArray, optional
        Standard deviation of a Gaussian predictive distribution around ``prediction``.
    ensemble : xarray.DataArray, optional
        Members (``member`` dim) that give the CRPS when ``prediction`` is deterministic.
    weights : xarray.DataArray, optional
        Area weights.

    Returns
    -------
    dict
        ``rmse``, ``mae``, ``bias`` and ``crps`` in the target's units; ``crps`` is
        NaN without ``std``, ``ensemble`` or a ``member`` dim.
    """
    if "member" in prediction.dims:
        ensemble, prediction = prediction, prediction.mean("member")
    scores = {
        "rmse": float(skill.rmse(prediction, truth, weights=weights)),
        "mae": float(skill.mae(prediction, truth, weights=weights)),
        "bias": float(skill.bias(prediction, truth, weights=weights)),
        "crps": math.nan,
    }
    if ensemble is not None:
        scores["crps"] = float(skill.crps_ensemble(ensemble, truth, weights=weights))
    elif std is not None:
        scores["crps"] = crps_gaussian(prediction, std, truth, weights=weights)
    return scores


def _score_case(predictions: xr.Dataset, weights: xr.DataArray | None) -> dict[str, dict[str, float]]:
    truth = predictions.truth
    return {
        method: score_method(
            truth,
            predictions[method],
            std=predictions.get(f"{method}_std"),
            ensemble=predictions.get(f"{method}_ensemble"),
            weights=weights,
        )
        for method in METHODS
    }


def bootstrap_interval(values: Sequence[float], confidence: float = CONFIDENCE, random_state: int = 0) -> tuple[float, float]:
    """Return the percentile bootstrap interval of the mean of ``values``; NaN for fewer than 2 finite values.

    Uses ``scipy.stats.bootstrap`` with 9999 resamples. With as few values as
    seeds in a benchmark (2 to 10) the interval is rough and tends to be too narrow.

    Examples
    --------
    >>> bootstrap_interval([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    from scipy import stats

    values = np.asarray([v for v in values if np.isfinite(v)], dtype="float64")
    if values.size < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        # Every resample has the same mean; scipy would warn about degenerate data.
        return float(values[0]), float(values[0])
    interval = stats.bootstrap(
        (values,), np.mean, confidence_level=confidence, method="percentile", n_resamples=9999, rng=random_state
    ).confidence_interval
    return float(interval.low), float(interval.high)


# --------------------------------------------------------------------------- #
# One case
# --------------------------------------------------------------------------- #


def _run_seed(config: RunConfig, dataset: xr.Dataset, seed: int) -> tuple[dict[str, xr.Dataset], xr.DataArray, list[str]]:
    from condupdate.bench.baselines import baseline_predictions
    from condupdate.jobs.prepare import prepare
    from condupdate.jobs.run import run

    config = _with_seed(config, seed)
    with warnings.catch_warnings(record=True) as caught:
        # The cases extrapolate on purpose; their distance is in every row of bench.csv.
        warnings.simplefilter("always", ExtrapolationWarning)
        result = run(config, dataset=dataset)
        prep = prepare(config, dataset=dataset)
        baselines = baseline_predictions(result, prep)
    notes = []
    for item in caught:
        if issubclass(item.category, ExtrapolationWarning):
            notes.append(str(item.message))
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    merged = {target: xr.merge([result.predictions[target], baselines[target]], join="exact") for target in baselines}
    return merged, result.distance, notes


def _open_case(config: RunConfig) -> tuple[RunConfig, xr.Dataset]:
    # Opened (and thinned) once per case and loaded, so that the seeds do not
    # read the files or rerun a dataset loader again.
    # NOTE: assumes that each case's data fit in memory, as the sample-sized cases do.
    from condupdate.jobs.prepare import prepare

    dataset = prepare(config).dataset.load()
    return config.model_copy(update={"data": config.data.model_copy(update={"thin": {}})}), dataset


def _run_case(case: Case, config: RunConfig, seeds: int, report: Callable[[str], None]):
    config, dataset = _open_case(config)
    rows, first = [], None
    for seed in range(seeds):
        tic = time.perf_counter()
        predictions, distance, notes = _run_seed(config, dataset, seed)
        if seed == 0:
            first = (predictions, distance, config.split.dim)
            for note in dict.fromkeys(notes):
                report(f"note: case {case.name}: {note}")
        mean_distance = float(distance.mean())
        for target, ds in predictions.items():
            label = case.name if len(predictions) == 1 else f"{case.name}/{target}"
            for method, scores in _score_case(ds, _weights(ds.truth)).items():
                rows.append({"case": label, "method": method, "seed": seed, **scores, "extrapolation_distance": mean_distance})
        report(f"case {case.name} seed {seed}: {time.perf_counter() - tic:.1f} s")
    return rows, first


# --------------------------------------------------------------------------- #
# Summary
# --------------------------------------------------------------------------- #


def _summarise(rows: list[dict[str, object]]) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    summary, gains = [], []
    for case in dict.fromkeys(row["case"] for row in rows):
        case_rows = [row for row in rows if row["case"] == case]
        rmse = {}
        for method in METHODS:
            method_rows = [row for row in case_rows if row["method"] == method]
            entry: dict[str, object] = {"case": case, "method": method, "n_seeds": len(method_rows)}
            for score in SCORES:
                values = [float(row[score]) for row in method_rows]
                finite = [v for v in values if np.isfinite(v)]
                entry[f"{score}_mean"] = float(np.mean(finite)) if finite else math.nan
                entry[f"{score}_low"], entry[f"{score}_high"] = bootstrap_interval(values)
            entry["extrapolation_distance"] = float(np.mean([float(row["extrapolation_distance"]) for row in method_rows]))
            summary.append(entry)
            rmse[method] = {int(row["seed"]): float(row["rmse"]) for row in method_rows}

        # Gains in % of the other method's RMSE, paired by seed; positive: the child is better.
        baselines = [m for m in METHODS if m != "child"]
        best = min(baselines, key=lambda m: np.mean(list(rmse[m].values())))
        for versus, baseline in (("parent", "parent"), ("best_baseline", best)):
            per_seed = [100.0 * (rmse[baseline][s] - rmse["child"][s]) / rmse[baseline][s] for s in rmse["child"]]
            low, high = bootstrap_interval(per_seed)
            gains.append({"case": case, "versus": versus, "baseline": baseline, "gain_mean": float(np.mean(per_seed)), "gain_low": low, "gain_high": high})
    return summary, gains


def _format(value: object) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _write_csv(path: Path, header: Sequence[str], rows: list[dict[str, object]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([_format(row[key]) for key in header])


def format_summary(result: BenchResult) -> str:
    """Return the printed summary: per case, each method's mean and 90 % interval, then the child's gains."""

    def interval(entry, score):
        mean, low, high = (entry[f"{score}_{part}"] for part in ("mean", "low", "high"))
        if not math.isfinite(mean):
            return f"{'':>26}"
        text = f"{mean:.3f}"
        if math.isfinite(low):
            text += f" [{low:.3f}, {high:.3f}]"
        return f"{text:>26}"

    lines = []
    for case in dict.fromkeys(entry["case"] for entry in result.summary):
        entries = [entry for entry in result.summary if entry["case"] == case]
        lines.append(
            f"Case {case}: {entries[0]['n_seeds']} seeds, mean extrapolation distance "
            f"{entries[0]['extrapolation_distance']:.2f} training standard deviations; mean [90 % interval] over seeds"
        )
        lines.append(f"  {'method':<18}{'rmse':>26}{'mae':>10}{'bias':>10}{'crps':>26}")
        for entry in entries:
            lines.append(
                f"  {entry['method']:<18}{interval(entry, 'rmse')}{entry['mae_mean']:>10.3f}{entry['bias_mean']:>10.3f}"
                f"{interval(entry, 'crps')}"
            )
        for gain in (g for g in result.gains if g["case"] == case):
            text = f"{gain['gain_mean']:+.1f} %"
            if math.isfinite(gain["gain_low"]):
                text += f" [{gain['gain_low']:+.1f}, {gain['gain_high']:+.1f}]"
            lines.append(f"  RMSE gain of the child over {gain['baseline']} ({gain['versus'].replace('_', ' ')}): {text}")
    for name, reason in result.skipped.items():
        lines.append(f"Skipped case {name}: {reason}")
    for name, error in result.failed.items():
        lines.append(f"Failed case {name}: {error}")
    if result.out_dir is not None:
        lines.append(f"Results written to {result.out_dir}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# The whole bench
# --------------------------------------------------------------------------- #


def _check_replaceable(out: Path, overwrite: bool) -> None:
    check_output_dir(out, overwrite=overwrite)
    if overwrite and out.is_dir() and any(out.iterdir()) and not (out / _MARKER).is_file():
        raise FileExistsError(
            f"Output folder {str(out)!r} is not empty and contains no bench results ({_MARKER} missing), "
            "so --overwrite will not replace it; choose another --out."
        )


def run_bench(
    cases: Sequence[str] | None = None,
    seeds: int | None = None,
    quick: bool = False,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    report: Callable[[str], None] = logger.info,
) -> BenchResult:
    """Run the use cases with several seeds and score the child against every baseline.

    Parameters
    ----------
    cases : sequence of str, optional
        Names from :data:`condupdate.bench.cases.CASES`; all by default. A case
        whose configuration file is missing is skipped with a note.
    seeds : int, optional
        Runs per case (default 5, or 2 with ``quick``).
    quick : bool
        Apply each case's ``quick`` overrides (thinner grids, fewer epochs): a
        smoke test, not a result.
    out_dir : path, optional
        Folder for ``bench.csv``, ``summary.csv``, ``gains.csv`` and figures,
        written as a whole at the end. A non-empty folder is refused unless
        ``overwrite`` is true and it contains earlier bench results.
    report : callable
        Receives progress lines and notes.

    Returns
    -------
    BenchResult
        A case that raises is recorded in ``failed`` and the other cases still run.
    """
    if seeds is None:
        seeds = QUICK_SEEDS if quick else DEFAULT_SEEDS
    seeds = int(seeds)
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}.")
    selected = select_cases(cases)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _check_replaceable(out, overwrite)
    folder = configs_dir()

    rows, firsts, skipped, failed = [], {}, {}, {}
    for case in selected:
        if not (folder / case.config).is_file():
            skipped[case.name] = f"configuration {str(folder / case.config)!r} not found"
            report(f"note: case {case.name} skipped: {skipped[case.name]}")
            continue
        missing = [(module, command) for module, command in case.requires if importlib.util.find_spec(module) is None]
        if missing:
            skipped[case.name] = "; ".join(f"package {module} not installed (install it with: {command})" for module, command in missing)
            report(f"note: case {case.name} skipped: {skipped[case.name]}")
            continue
        try:
            config = load_case_config(case, quick=quick, folder=folder)
            case_rows, firsts[case.name] = _run_case(case, config, seeds, report)
        except Exception as err:  # noqa: BLE001 - one broken case must not lose the others' results
            logger.debug("case %s failed", case.name, exc_info=True)
            failed[case.name] = f"{type(err).__name__}: {err}"
            report(f"error: case {case.name} failed: {failed[case.name]}")
            continue
        rows.extend(case_rows)

    summary, gains = _summarise(rows) if rows else ([], [])
    result = BenchResult(rows, summary, gains, skipped, failed)
    if out is not None and rows:
        tmp = new_sibling_dir(out)
        # mkdtemp makes the folder private to its owner; give it the permissions a plain mkdir would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            _write_csv(tmp / "bench.csv", HEADER, rows)
            _write_csv(tmp / "summary.csv", _SUMMARY_HEADER, summary)
            _write_csv(tmp / "gains.csv", _GAINS_HEADER, gains)
            from condupdate.bench.figures import write_figures

            write_figures(summary, firsts, tmp)
            swap_directory(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        result.out_dir = out
    return result
