"""Baselines of the scorecard, computed on the split, parent and anomaly store of a run.

Every baseline uses the same data as the child and nothing more: the training
selection, its normalisers and climatology, the parent and its anomaly store,
and the inputs and predictors (never the targets) of the application selection.

- ``nearest_finetune``: the parent plus the anomaly of the subset whose predictor
  is nearest the application predictor (:class:`NearestSubsetRegressor`).
- ``task_vector``: the parent plus the anomalies of the two extreme subsets,
  interpolated or extrapolated linearly in the first predictor
  (:class:`TaskVectorRegressor`).
- ``linear_baseline``: pattern scaling when the first predictor has one value per
  step of the split dim (as :func:`condupdate.run` computes it), otherwise least
  squares of each target on the network inputs and the predictors
  (:func:`least_squares_baseline`).
- ``predictor_input``: a network of the parent's size trained on the training
  selection with the predictors as extra input columns.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import xarray as xr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from condupdate.bundle import AdaptedEmulator
from condupdate.data import Normalizer, select, stack_samples
from condupdate.emulators import MLP, TrainConfig, train
from condupdate.emulators.mlp import gaussian_parts
from condupdate.jobs.prepare import Prepared, build_inputs
from condupdate.update import ConditionalUpdate

__all__ = [
    "BASELINES",
    "NearestSubsetRegressor",
    "TaskVectorRegressor",
    "baseline_predictions",
    "least_squares_baseline",
    "with_regressor",
]

logger = logging.getLogger(__name__)

BASELINES = ("nearest_finetune", "linear_baseline", "task_vector", "predictor_input")


# --------------------------------------------------------------------------- #
# Weight regressors that turn the anomaly store into a baseline
# --------------------------------------------------------------------------- #


class NearestSubsetRegressor(RegressorMixin, BaseEstimator):
    """Return the anomaly of the training subset whose predictor is nearest.

    Distances are Euclidean after dividing each predictor column by its standard
    deviation over the subsets, so predictors in different units weigh alike. A
    tie goes to the subset listed first.

    Attributes
    ----------
    predictors_ : numpy.ndarray, shape (n_subsets, n_predictors)
    anomalies_ : numpy.ndarray, shape (n_subsets, n_parameters)
    scale_ : numpy.ndarray, shape (n_predictors,)
        Standard deviation of each predictor column (1 where it does not vary).

    Examples
    --------
    >>> import numpy as np
    >>> model = NearestSubsetRegressor().fit([[0.0], [1.0], [2.0]], np.eye(3))
    >>> model.predict([[5.0], [0.4]])
    array([[0., 0., 1.],
           [1., 0., 0.]])
    """

    def fit(self, X, y) -> NearestSubsetRegressor:
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        self.predictors_ = np.asarray(X, dtype="float64")
        self.anomalies_ = np.asarray(y, dtype="float64")
        scale = self.predictors_.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def nearest(self, X) -> np.ndarray:
        """Return the index of the nearest training subset for each row of ``X``."""
        check_is_fitted(self, "predictors_")
        X = validate_data(self, X, reset=False)
        # (n, 1, n_predictors) - (1, n_subsets, n_predictors) -> (n, n_subsets)
        distance = (((X[:, None, :] - self.predictors_[None]) / self.scale_) ** 2).sum(-1)
        return np.argmin(distance, axis=1)

    def predict(self, X) -> np.ndarray:
        return self.anomalies_[self.nearest(X)]


class TaskVectorRegressor(RegressorMixin, BaseEstimator):
    """Extrapolate the anomalies of the two extreme subsets linearly in the first predictor.

    With ``p_lo`` and ``p_hi`` the lowest and highest value of the first
    predictor over the subsets and ``d_lo``, ``d_hi`` the anomalies of those two
    subsets, the child at predictor ``p`` has the weights

        theta(p) = theta0 + d_lo + (p - p_lo) / (p_hi - p_lo) * (d_hi - d_lo),

    the parent plus the task vector ``d_hi - d_lo`` scaled by the predictor
    distance, as in task arithmetic on fine-tuned weights. It recovers ``d_lo`` and ``d_hi`` at the two extreme
    subsets and ignores every other subset. Other predictor columns are ignored.
    A tie for an extreme goes to the subset listed first.

    Attributes
    ----------
    low_, high_ : int
        Indices of the subsets with the lowest and highest first predictor.
    p_low_, p_high_ : float
    d_low_, d_high_ : numpy.ndarray, shape (n_parameters,)

    Examples
    --------
    >>> import numpy as np
    >>> model = TaskVectorRegressor().fit([[0.0], [1.0], [2.0]], [[0.0], [5.0], [2.0]])
    >>> model.predict([[4.0]])
    array([[4.]])
    """

    def fit(self, X, y) -> TaskVectorRegressor:
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype="float64").reshape(len(X), -1)
        first = np.asarray(X[:, 0], dtype="float64")
        self.low_, self.high_ = int(np.argmin(first)), int(np.argmax(first))
        self.p_low_, self.p_high_ = float(first[self.low_]), float(first[self.high_])
        if not self.p_high_ > self.p_low_:
            raise ValueError(
                f"The first predictor takes the single value {self.p_low_!r} in every subset, so the task vector "
                "has no direction; use subsets whose first predictor differs."
            )
        self.d_low_, self.d_high_ = y[self.low_], y[self.high_]
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "d_low_")
        X = validate_data(self, X, reset=False)
        fraction = (X[:, 0] - self.p_low_) / (self.p_high_ - self.p_low_)
        return self.d_low_ + fraction[:, None] * (self.d_high_ - self.d_low_)


def with_regressor(update: ConditionalUpdate, regressor: object) -> ConditionalUpdate:
    """Return a copy of a fitted update that shares its parent and anomaly store but uses ``regressor``.

    Nothing is fine-tuned again: the copy regresses the same anomalies (the
    member means, and with ``snr_threshold`` the same updated parameters).
    """
    variant = ConditionalUpdate(
        update.parent,
        regressor,
        update.finetune,
        space=update.space,
        members=update.members,
        snr_threshold=update.snr_threshold,
        engine=update.engine,
    )
    if not torch.equal(variant.theta0_, update.theta0_):
        raise RuntimeError(
            f"The parameter space {type(update.space).__name__} prepared a different theta0 on a second call, "
            "so the anomaly store cannot be reused; baselines need a deterministic space."
        )
    return variant.set_anomalies(update.anomalies_).fit_regressor()


# --------------------------------------------------------------------------- #
# Linear baseline
# --------------------------------------------------------------------------- #


def least_squares_baseline(X_train: np.ndarray, Y_train: np.ndarray, X_apply: np.ndarray) -> np.ndarray:
    """Fit ``y = b0 + X b`` by least squares per target column and predict at ``X_apply``.

    Parameters
    ----------
    X_train : numpy.ndarray, shape (n_train, n_columns)
        Regressors without NaN, for example the network inputs and the predictors.
    Y_train : numpy.ndarray, shape (n_train, n_targets)
        Targets; each column is fitted on its finite rows only.
    X_apply : numpy.ndarray, shape (n_apply, n_columns)

    Returns
    -------
    numpy.ndarray, shape (n_apply, n_targets)
        NaN for a target column without a finite training value.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0]])
    >>> least_squares_baseline(X, 1.0 + 2.0 * X, np.array([[10.0]])).round(6)
    array([[21.]])
    """
    X_train = check_array(X_train, dtype="float64")
    X_apply = check_array(X_apply, dtype="float64", ensure_min_samples=0)
    Y_train = np.asarray(Y_train, dtype="float64").reshape(len(X_train), -1)
    design = np.column_stack([np.ones(len(X_train)), X_train])
    design_apply = np.column_stack([np.ones(len(X_apply)), X_apply])
    out = np.full((len(X_apply), Y_train.shape[1]), np.nan)
    for j in range(Y_train.shape[1]):
        rows = np.isfinite(Y_train[:, j])
        if rows.any():
            # SVD-based least squares; rank-deficient designs (a constant column) get the minimum-norm solution.
            coefficients, *_ = np.linalg.lstsq(design[rows], Y_train[rows, j], rcond=None)
            out[:, j] = design_apply @ coefficients
    return out


# --------------------------------------------------------------------------- #
# All baselines of one run
# --------------------------------------------------------------------------- #


def _matrices(prep: Prepared, inputs: xr.Dataset) -> tuple[xr.DataArray, np.ndarray, np.ndarray]:
    # (sample, feature) inputs and (sample, predictor) predictors, stacked like run() stacks them.
    sample_dims = prep.config.data.sample_dims
    X_da = stack_samples(inputs, prep.features, sample_dims)
    P = stack_samples(inputs, [f"predictor:{n}" for n in prep.predictors], sample_dims).values
    return X_da, np.asarray(X_da.values, dtype="float64"), np.asarray(P, dtype="float64")


def _to_field(values: np.ndarray, ok: np.ndarray, X_da: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    # (n_ok,) predictions of the complete samples -> a field on the truth's dims and coords, NaN elsewhere.
    full = np.full(ok.size, np.nan)
    full[ok] = values
    flat = xr.DataArray(full, dims="sample", coords={"sample": X_da["sample"]})
    field = flat.unstack("sample").transpose(*truth.dims)
    return field.assign_coords({d: truth[d] for d in truth.dims if d in truth.coords})


def _network_outputs(model: torch.nn.Module, Z: np.ndarray, n_targets: int, batch_size: int = 8192):
    # (n, n_inputs) standardised inputs -> (n, n_targets) means and, for a Gaussian head, standard deviations.
    model.eval()
    with torch.no_grad():
        chunks = [model(torch.as_tensor(Z[i : i + batch_size], dtype=torch.float32)) for i in range(0, len(Z), batch_size)]
    out = torch.cat(chunks).numpy().astype("float64") if chunks else np.zeros((0, n_targets))
    if getattr(model, "head", "mean") == "gaussian":
        return gaussian_parts(out, n_targets)
    return out, None


def _predictor_input(prep: Prepared, emulator: AdaptedEmulator, apply_inputs: xr.Dataset, truths: dict[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    config = prep.config
    sample_dims = config.data.sample_dims

    # Training matrices: complete samples only, as the parent was trained.
    X_da, X, P = _matrices(prep, prep.train)
    Y = np.asarray(stack_samples(prep.train, prep.targets, sample_dims).values, dtype="float64")
    valid = np.isfinite(X).all(1) & np.isfinite(P).all(1) & np.isfinite(Y).any(1)
    columns = [*prep.features, *(f"predictor:{n}" for n in prep.predictors)]
    Z = np.column_stack([X, P])[valid]
    z_norm = Normalizer().fit(xr.DataArray(Z, dims=("sample", "feature"), coords={"feature": columns}))
    Yn = emulator.target_normalizer.transform(Y[valid])

    model = MLP(Z.shape[1], len(prep.targets), seed=config.training.seed, **config.emulator.model_dump())
    train(model, z_norm.transform(Z), Yn, TrainConfig(**config.training.model_dump()), description="predictor_input")

    X_da, X, P = _matrices(prep, apply_inputs)
    ok = np.isfinite(X).all(1) & np.isfinite(P).all(1)
    mean, std = _network_outputs(model, z_norm.transform(np.column_stack([X, P])[ok]), len(prep.targets))
    mean = emulator.target_normalizer.inverse_transform(mean)
    out = {}
    for j, target in enumerate(prep.targets):
        out[f"{target}/predictor_input"] = _to_field(mean[:, j], ok, X_da, truths[target])
        if std is not None:
            # A standard deviation scales with the target's scale and ignores its offset.
            out[f"{target}/predictor_input_std"] = _to_field(std[:, j] * emulator.target_normalizer.scale_[j], ok, X_da, truths[target])
    return out


def _least_squares(prep: Prepared, apply_inputs: xr.Dataset, truths: dict[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    sample_dims = prep.config.data.sample_dims
    _, X, P = _matrices(prep, prep.train)
    Y = np.asarray(stack_samples(prep.train, prep.targets, sample_dims).values, dtype="float64")
    valid = np.isfinite(X).all(1) & np.isfinite(P).all(1)
    X_da, X_apply, P_apply = _matrices(prep, apply_inputs)
    ok = np.isfinite(X_apply).all(1) & np.isfinite(P_apply).all(1)
    predicted = least_squares_baseline(np.column_stack([X, P])[valid], Y[valid], np.column_stack([X_apply, P_apply])[ok])
    return {target: _to_field(predicted[:, j], ok, X_da, truths[target]) for j, target in enumerate(prep.targets)}


def baseline_predictions(result, prep: Prepared) -> dict[str, xr.Dataset]:
    """Predict the application selection of a run with every baseline.

    Parameters
    ----------
    result : condupdate.jobs.run.RunResult
        A finished run; its parent, anomaly store, normalisers and climatology are reused.
    prep : Prepared
        :func:`condupdate.jobs.prepare.prepare` of the same configuration and data.

    Returns
    -------
    dict of str to xarray.Dataset
        Per target, one variable per name in :data:`BASELINES` on the dims and
        coordinates of the truth, in the target's units. A baseline built on a
        network with a Gaussian head also gets ``NAME_std``, its predicted
        standard deviation.
    """
    config = prep.config
    emulator = result.emulator
    split = config.split
    truths = {target: result.predictions[target].truth for target in prep.targets}
    apply_raw = select(prep.dataset, split.dim, split.apply if split.labels else tuple(split.apply))
    apply_inputs = build_inputs(apply_raw, config, emulator.climatology)
    out = {target: xr.Dataset() for target in prep.targets}

    # Anomaly-store baselines: the run's parent and anomalies with another weight regressor.
    for name, regressor in (("nearest_finetune", NearestSubsetRegressor()), ("task_vector", TaskVectorRegressor())):
        variant = AdaptedEmulator(
            config, with_regressor(result.update, regressor), emulator.input_normalizer, emulator.target_normalizer,
            emulator.climatology, emulator.variables, emulator.training_fingerprint,
        )
        predicted = variant.predict(apply_raw)
        for target, truth in truths.items():
            for suffix in ("", "_std"):
                if f"{target}{suffix}" in predicted:
                    field = predicted[f"{target}{suffix}"].transpose(*truth.dims)
                    out[target][f"{name}{suffix}"] = field.assign_coords({d: truth[d] for d in truth.dims if d in truth.coords})

    # Linear baseline: pattern scaling where run() computed it, least squares otherwise.
    least_squares = None
    for target, truth in truths.items():
        if "pattern_scaling" in result.predictions[target]:
            out[target]["linear_baseline"] = result.predictions[target].pattern_scaling
        else:
            if least_squares is None:
                least_squares = _least_squares(prep, apply_inputs, truths)
            out[target]["linear_baseline"] = least_squares[target]

    for key, field in _predictor_input(prep, emulator, apply_inputs, truths).items():
        target, name = key.split("/")
        out[target][name] = field

    for target, ds in out.items():
        for name in ds.data_vars:
            ds[name].attrs = {k: truths[target].attrs[k] for k in ("units",) if k in truths[target].attrs}
            ds[name].attrs["long_name"] = f"{truths[target].attrs.get('long_name', target)} predicted by {name.replace('_', ' ')}"
        out[target] = ds.compute()
    return out
