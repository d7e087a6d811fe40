"""Check a configuration against its input files without training: what a run would use."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from condupdate import regimes, skill
from condupdate._errors import ConfigError
from condupdate.data import stack_samples
from condupdate.jobs.config import RunConfig
from condupdate.jobs.prepare import Prepared, check_training_values, per_sample, prepare

__all__ = ["CheckReport", "PredictorRange", "check", "EXTRAPOLATION_THRESHOLD"]

# Largest extrapolation distance [training standard deviations] that passes
# without a warning. NOTE: 3 is a judgement, not a measured limit of skill.
EXTRAPOLATION_THRESHOLD = 3.0


@dataclass
class PredictorRange:
    """Range of one predictor in the training and application selections, in its own units."""

    name: str
    units: str
    train_min: float
    train_max: float
    apply_min: float
    apply_max: float
    distance: float  # largest extrapolation distance of the application samples [training standard deviations]


@dataclass
class CheckReport:
    """Summary of the selections, samples, subsets, predictors and network that a run would use."""

    files: list[str]
    calendar: str | None  # calendar of the split dim, None when it is not a time axis
    sample_sizes: dict[str, int]  # size of each sample dim after data.thin
    split_dim: str
    train_range: str  # first .. last label of the training selection along split_dim
    train_size: int  # steps along split_dim
    apply_range: str
    apply_size: int
    train_samples: int  # samples with complete inputs, predictors and at least one target
    apply_samples: int
    masked_fraction: dict[str, float]  # per target: fraction of NaN cells in the opened files
    subsets: dict[str, int]  # complete training samples per subset label
    predictors: list[PredictorRange]
    n_parameters: int  # trainable parameters of the parent network
    warnings: list[str] = field(default_factory=list)

    def format(self) -> str:
        """Format the report as lines of text for the command line."""
        lines = [f"Files: {', '.join(self.files) or '(dataset)'}"]
        lines.append(f"Calendar of {self.split_dim!r}: {self.calendar or 'none (not a time axis)'}")
        lines.append("Sample dims: " + ", ".join(f"{d} {n}" for d, n in self.sample_sizes.items()))
        lines.append(
            f"Training selection: {self.train_range} ({self.train_size} steps along {self.split_dim!r}), "
            f"{self.train_samples} complete samples"
        )
        lines.append(
            f"Application selection: {self.apply_range} ({self.apply_size} steps along {self.split_dim!r}), "
            f"{self.apply_samples} complete samples"
        )
        for target, fraction in self.masked_fraction.items():
            lines.append(f"Target {target!r}: {100 * fraction:.1f}% of cells masked (NaN)")
        listed = ", ".join(f"{label} ({count})" for label, count in self.subsets.items())
        lines.append(f"Subsets: {len(self.subsets)}, complete samples in each: {listed}")
        for p in self.predictors:
            lines.append(
                f"Predictor {p.name!r} [{p.units}]: training {p.train_min:.6g} .. {p.train_max:.6g}, "
                f"application {p.apply_min:.6g} .. {p.apply_max:.6g}, "
                f"extrapolation distance up to {p.distance:.2f} training standard deviations"
            )
        lines.append(f"Network: {self.n_parameters} parameters")
        lines.extend(f"Warning: {message}" for message in self.warnings)
        return "\n".join(lines)


def _range_label(ds: xr.Dataset, dim: str) -> str:
    values = ds[dim].values
    return f"{values[0]} .. {values[-1]}" if values.size else "(empty)"


def _calendar(ds: xr.Dataset, dim: str) -> str | None:
    try:
        return str(ds[dim].dt.calendar)
    except (AttributeError, TypeError):
        return None


def _complete(prep: Prepared, selection: xr.Dataset) -> np.ndarray:
    sample_dims = prep.config.data.sample_dims
    X = stack_samples(selection, prep.features, sample_dims).values
    Y = stack_samples(selection, prep.targets, sample_dims).values
    P = stack_samples(selection, [f"predictor:{n}" for n in prep.predictors], sample_dims).values
    return np.isfinite(X).all(1) & np.isfinite(Y).any(1) & np.isfinite(P).all(1)


def _predictor_range(prep: Prepared, name: str) -> PredictorRange:
    train, apply = prep.train[f"predictor:{name}"], prep.apply[f"predictor:{name}"]
    distance = skill.extrapolation_distance(apply, train).max()
    return PredictorRange(
        name,
        str(train.attrs.get("units", "")),
        float(train.min()),
        float(train.max()),
        float(apply.min()),
        float(apply.max()),
        float(distance),
    )


def check(config: RunConfig, dataset: xr.Dataset | None = None) -> CheckReport:
    """Open and validate the inputs of ``config`` and report what a run would use, without training.

    Parameters
    ----------
    config : RunConfig
        A validated configuration (see :func:`condupdate.jobs.config.load_config`).
    dataset : xarray.Dataset, optional
        Data to use instead of the files in ``config.data.paths``.

    Returns
    -------
    CheckReport

    Raises
    ------
    DataError
        When the run could not start: a missing variable or coordinate, an empty
        selection, an all-NaN variable or subset, or fewer than two subsets.
    FileNotFoundError
        When an input file is missing.
    """
    from condupdate.emulators import MLP  # torch is imported only when a check runs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prep = prepare(config, dataset)
    messages = [str(w.message) for w in caught]

    sample_dims = config.data.sample_dims
    X = stack_samples(prep.train, prep.features, sample_dims).values
    Y = stack_samples(prep.train, prep.targets, sample_dims).values
    P = stack_samples(prep.train, [f"predictor:{n}" for n in prep.predictors], sample_dims).values
    labels = per_sample(prep.subsets, prep.train, sample_dims).astype(str)
    valid = check_training_values(prep, X, Y, P, labels)
    subsets = {label: int(valid[labels == label].sum()) for label in regimes.subset_order(prep.subsets)}
    select = config.update.select
    if select is not None and len(subsets) - select.holdout < 2:
        raise ConfigError(
            f"update.select.holdout = {select.holdout} is invalid: holding out that many of the {len(subsets)} training "
            f"subsets leaves {len(subsets) - select.holdout}, and the weight regression needs at least 2. Lower "
            f"update.select.holdout to at most {len(subsets) - 2}, or use more subsets."
        )

    predictors = [_predictor_range(prep, name) for name in prep.predictors]
    for p in predictors:
        if p.distance > EXTRAPOLATION_THRESHOLD:
            messages.append(
                f"application predictor {p.name!r} lies up to {p.distance:.2f} training standard deviations "
                f"beyond its training range (threshold {EXTRAPOLATION_THRESHOLD:g}); the child extrapolates there."
            )

    parent = MLP(len(prep.features), len(prep.targets), seed=config.training.seed, **config.emulator.model_dump())
    split_dim = config.split.dim
    return CheckReport(
        files=list(config.data.paths),
        calendar=_calendar(prep.dataset, split_dim),
        sample_sizes={d: int(prep.dataset.sizes[d]) for d in sample_dims if d in prep.dataset.sizes},
        split_dim=split_dim,
        train_range=_range_label(prep.train, split_dim),
        train_size=int(prep.train.sizes[split_dim]),
        apply_range=_range_label(prep.apply, split_dim),
        apply_size=int(prep.apply.sizes[split_dim]),
        train_samples=int(valid.sum()),
        apply_samples=int(_complete(prep, prep.apply).sum()),
        masked_fraction={t: float(prep.dataset[t].isnull().mean()) for t in prep.targets},
        subsets=subsets,
        predictors=predictors,
        n_parameters=sum(p.numel() for p in parent.parameters() if p.requires_grad),
        warnings=messages,
    )
