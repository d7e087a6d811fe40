"""Forgetful fine-tuning, weight regression and child construction."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr
from sklearn.base import clone
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from condupdate.emulators.training import TrainConfig, TrainHistory, train
from condupdate.update.anomalies import anomalies_to_dataarray, predictor_matrix
from condupdate.update.params import parameter_layout, parameter_vector, unflatten, with_parameters
from condupdate.update.regressors import WeightRegressor

__all__ = ["ConditionalUpdate", "DEFAULT_FINETUNE"]

logger = logging.getLogger(__name__)

# Fine-tuning starts from a trained parent, so it takes a smaller step and fewer epochs.
DEFAULT_FINETUNE = TrainConfig(epochs=20, learning_rate=3e-4, patience=5)

# Mean number of samples per distinct child above which children run one batched
# forward pass each instead of vmap over per-sample weights.
GROUP_MIN_SAMPLES = 16


class ConditionalUpdate:
    """Adapt a parent network by regressing its fine-tuned weight anomalies on predictors.

    Step 1, :meth:`fit_anomalies`: for each subset, fine-tune a fresh copy of the
    parent with a fresh optimiser and record ``theta_k - theta0``. Step 2,
    :meth:`fit_regressor`: fit the weight regressor on (subset predictor,
    anomaly) pairs. Step 3, :meth:`child` or :meth:`predict`: evaluate the
    regressor at application predictors and run the child ``theta0 + g(r*)``.

    Parameters
    ----------
    parent : torch.nn.Module
        The trained emulator, mapping ``(batch, n_inputs)`` to ``(batch, n_outputs)``.
        It is copied, never modified.
    regressor : scikit-learn regressor, optional
        Maps ``(n_subsets, n_predictors)`` to ``(n_subsets, n_parameters)``;
        default ``WeightRegressor(method="ridge")``. It is cloned before fitting.
    finetune : TrainConfig, optional
        Fine-tuning settings; default ``DEFAULT_FINETUNE``.

    Attributes
    ----------
    anomalies_ : xarray.DataArray
        ``(subset, parameter)`` anomaly store with the predictors as coordinates.
    regressor_ : fitted regressor
    histories_ : dict of str to TrainHistory
        Fine-tuning loss curves per subset.
    """

    def __init__(
        self,
        parent: nn.Module,
        regressor: object | None = None,
        finetune: TrainConfig | None = None,
    ) -> None:
        self.parent = copy.deepcopy(parent).eval()
        self.regressor = regressor if regressor is not None else WeightRegressor(method="ridge")
        self.finetune = finetune or DEFAULT_FINETUNE
        self.theta0_ = parameter_vector(self.parent)
        self.layout_ = parameter_layout(self.parent)

    # Step 1 ---------------------------------------------------------------
    def fit_anomalies(
        self,
        subsets: Sequence[tuple[str, np.ndarray, np.ndarray]],
        predictors: np.ndarray,
        predictor_names: Sequence[str] | None = None,
    ) -> ConditionalUpdate:
        """Fine-tune one fresh parent copy per subset and store the anomalies.

        Parameters
        ----------
        subsets : sequence of (label, X, y)
            Standardised inputs ``(n_k, n_inputs)`` and targets ``(n_k, n_outputs)`` of each subset.
        predictors : array, shape (n_subsets, n_predictors)
            Predictor of each subset, computed without application targets.
        predictor_names : sequence of str, optional
            Names of the predictor columns; default ``predictor_0``, ...
        """
        predictors = np.asarray(predictors, dtype="float64").reshape(len(subsets), -1)
        names = list(predictor_names or [f"predictor_{j}" for j in range(predictors.shape[1])])
        if len(names) != predictors.shape[1]:
            raise ValueError(f"Got {len(names)} predictor names for {predictors.shape[1]} predictor columns.")

        rows, self.histories_ = [], {}
        for label, X, y in tqdm(subsets, desc="fine-tuning subsets", disable=not self.finetune.progress):
            # A fresh copy and a fresh optimiser per subset, so each anomaly describes
            # its subset alone and not the order in which subsets were visited. All
            # subsets share one seed: the shared batch-order noise then largely
            # cancels between anomalies instead of adding to their differences.
            model = copy.deepcopy(self.parent)
            self.histories_[label] = train(model, X, y, self.finetune, description=f"fine-tune {label}")
            rows.append((parameter_vector(model) - self.theta0_).numpy())
            logger.info("fine-tuned subset %s on %d samples", label, len(X))

        self.anomalies_ = anomalies_to_dataarray(
            np.stack(rows), [s[0] for s in subsets], predictors, names, self.layout_
        )
        return self

    def set_anomalies(self, anomalies: xr.DataArray) -> ConditionalUpdate:
        """Use a stored anomaly DataArray (for example from :func:`load_anomalies`) instead of fine-tuning."""
        if anomalies.sizes["parameter"] != self.theta0_.numel():
            raise ValueError(
                f"Anomaly store has {anomalies.sizes['parameter']} parameters; the parent has {self.theta0_.numel()}."
            )
        self.anomalies_ = anomalies
        return self

    # Step 2 ---------------------------------------------------------------
    def fit_regressor(self) -> ConditionalUpdate:
        """Fit the weight regressor on the stored (predictor, anomaly) pairs."""
        if not hasattr(self, "anomalies_"):
            raise RuntimeError("No anomalies yet; call fit_anomalies() or set_anomalies() first.")
        X = predictor_matrix(self.anomalies_)
        self.regressor_ = clone(self.regressor).fit(X, self.anomalies_.values)
        self.train_predictors_ = X
        return self

    def fit(
        self,
        subsets: Sequence[tuple[str, np.ndarray, np.ndarray]],
        predictors: np.ndarray,
        predictor_names: Sequence[str] | None = None,
    ) -> ConditionalUpdate:
        """Run :meth:`fit_anomalies` then :meth:`fit_regressor`."""
        return self.fit_anomalies(subsets, predictors, predictor_names).fit_regressor()

    # Step 3 ---------------------------------------------------------------
    def predict_anomaly(self, predictors: np.ndarray) -> np.ndarray:
        """Return predicted anomalies ``(n, n_parameters)`` at predictors ``(n, n_predictors)``."""
        if not hasattr(self, "regressor_"):
            raise RuntimeError("The weight regressor is not fitted; call fit() or fit_regressor() first.")
        predictors = np.asarray(predictors, dtype="float64")
        predictors = predictors.reshape(-1, self.train_predictors_.shape[1])
        return np.asarray(self.regressor_.predict(predictors)).reshape(len(predictors), -1)

    def child(self, predictor: np.ndarray | Sequence[float] | float) -> nn.Module:
        """Build the child network ``theta0 + g(predictor)`` for one predictor value (or vector)."""
        delta = torch.as_tensor(self.predict_anomaly(np.atleast_1d(predictor))[0], dtype=self.theta0_.dtype)
        return with_parameters(self.parent, self.theta0_ + delta)

    def predict(self, X: np.ndarray, predictors: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Predict with per-sample children, ``theta0 + g(predictor_i)`` for sample i.

        Samples whose predicted weights are identical share one child. When there
        are few distinct children (at least ``GROUP_MIN_SAMPLES`` samples each on
        average), each runs as one batched forward pass, so a zero anomaly gives
        the parent's predictions bit for bit. Otherwise the network runs with
        ``torch.func.vmap`` over per-sample weights in batches. No module is built
        per sample either way.

        Parameters
        ----------
        X : array, shape (n_samples, n_inputs)
            Standardised inputs.
        predictors : array, shape (n_samples, n_predictors) or (n_samples,)
        batch_size : int
            Samples per forward call; in the vmap path memory grows as
            ``batch_size * n_parameters``.

        Returns
        -------
        numpy.ndarray, shape (n_samples, n_outputs)
        """
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        if len(X) == 0:
            with torch.no_grad():
                return self.parent(X).numpy()
        predictors = np.asarray(predictors, dtype="float64").reshape(len(X), -1)

        # Distinct predictors, then distinct weight vectors: a zero anomaly maps every
        # predictor to theta0 itself.
        unique, inverse = np.unique(predictors, axis=0, return_inverse=True)
        thetas = self.theta0_ + torch.as_tensor(self.predict_anomaly(unique), dtype=self.theta0_.dtype)
        thetas_np, child_index = np.unique(thetas.numpy(), axis=0, return_inverse=True)
        thetas = torch.as_tensor(thetas_np)
        sample_child = torch.as_tensor(child_index.ravel()[inverse.ravel()])
        buffers = dict(self.parent.named_buffers())

        with torch.no_grad():
            if len(thetas) * GROUP_MIN_SAMPLES <= len(X):
                return self._predict_grouped(X, thetas, sample_child, buffers, batch_size)
            return self._predict_vmap(X, thetas, sample_child, buffers, batch_size)

    def _predict_grouped(self, X, thetas, sample_child, buffers, batch_size) -> np.ndarray:
        outputs: torch.Tensor | None = None
        for k, theta in enumerate(thetas):
            rows = torch.nonzero(sample_child == k).ravel()
            params = unflatten(theta, self.layout_)
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                # (chunk, n_inputs) -> (chunk, n_outputs) with one child's weights
                out = functional_call(self.parent, (params, buffers), (X[chunk],))
                if outputs is None:
                    outputs = torch.empty(len(X), out.shape[1], dtype=out.dtype)
                outputs[chunk] = out
        return outputs.numpy()

    def _predict_vmap(self, X, thetas, sample_child, buffers, batch_size) -> np.ndarray:
        def run_one(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            params = unflatten(theta, self.layout_)
            return functional_call(self.parent, (params, buffers), (x[None],))[0]

        batched = vmap(run_one)
        outputs = []
        for start in range(0, len(X), batch_size):
            rows = slice(start, start + batch_size)
            # (batch, n_parameters) weights and (batch, n_inputs) inputs -> (batch, n_outputs)
            outputs.append(batched(thetas[sample_child[rows]], X[rows]))
        return torch.cat(outputs).numpy()
