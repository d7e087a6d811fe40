"""Forgetful fine-tuning, weight regression and child construction."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
import xarray as xr
from sklearn.base import clone
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from condupdate.emulators.training import TrainConfig, TrainHistory, train
from condupdate.update.anomalies import anomalies_to_dataarray, predictor_matrix
from condupdate.update.regressors import WeightRegressor
from condupdate.update.spaces import AllParameters, ParameterSpace

__all__ = ["ConditionalUpdate", "DEFAULT_FINETUNE", "finetune_unit"]

logger = logging.getLogger(__name__)

# Fine-tuning starts from a trained parent, so it takes a smaller step and fewer epochs.
DEFAULT_FINETUNE = TrainConfig(epochs=20, learning_rate=3e-4, patience=5)

# Mean number of samples per distinct child above which children run one batched
# forward pass each instead of vmap over per-sample weights.
GROUP_MIN_SAMPLES = 16


def finetune_unit(
    parent: nn.Module, space: ParameterSpace, X: np.ndarray, y: np.ndarray, config: TrainConfig, description: str
) -> tuple[np.ndarray, TrainHistory]:
    """Fine-tune a fresh copy of the parent on one subset and return its anomaly and loss history.

    A unit of :meth:`ConditionalUpdate.fit_anomalies`: a module-level function of
    picklable arguments, so a dask worker runs it as this process would. The
    parent is prepared by ``space`` inside the unit because prepared low-rank
    adapters are torch parametrizations, which torch does not pickle.

    Returns
    -------
    anomaly : numpy.ndarray, shape (n_parameters,)
        ``theta_k - theta0`` in the moving parameters of ``space``.
    history : TrainHistory
    """
    # A fresh copy and a fresh optimiser per subset, so each anomaly describes its
    # subset alone and not the order in which subsets were visited.
    model = space.prepare(parent)
    theta0 = space.vector(model)
    history = train(model, X, y, config, description=description)
    logger.info("%s: fine-tuned on %d samples", description, len(X))
    return (space.vector(model) - theta0).numpy(), history


class ConditionalUpdate:
    """Adapt a parent network by regressing its fine-tuned weight anomalies on predictors.

    Step 1, :meth:`fit_anomalies`: for each subset (and each of ``members``
    seeds), fine-tune a fresh copy of the parent with a fresh optimiser and record
    ``theta_k - theta0`` in the moving parameters. Step 2, :meth:`fit_regressor`:
    fit the weight regressor on (subset predictor, member-mean anomaly) pairs, and
    one regressor per member when there are several. Step 3, :meth:`child`,
    :meth:`predict` or :meth:`predict_ensemble`: evaluate the regressor at
    application predictors and run the child ``theta0 + g(r*)``.

    Parameters
    ----------
    parent : torch.nn.Module
        The trained emulator, mapping ``(batch, n_inputs)`` to ``(batch, n_outputs)``.
        It is copied, never modified.
    regressor : scikit-learn regressor, optional
        Maps ``(n_subsets, n_predictors)`` to ``(n_subsets, n_parameters)``;
        default ``WeightRegressor(method="ridge")``. It is cloned before fitting.
    finetune : TrainConfig, optional
        Fine-tuning settings; default ``DEFAULT_FINETUNE``. Member m uses seed
        ``finetune.seed + m``.
    space : ParameterSpace, optional
        Which parameters move (all, a selection, low-rank adapters); default all.
    members : int, default 1
        Fine-tuning seeds per subset. With two or more, the anomaly store gains a
        ``member`` dim and :meth:`signal_to_noise` measures fine-tuning noise.
    snr_threshold : float, optional
        With several members, only parameters whose signal-to-noise ratio is at
        least this value are updated; the others keep the parent's values.
    engine : {"sequential", "batched"}
        ``"batched"`` fine-tunes all subsets and members at once with
        :func:`condupdate.update.batched.finetune_batched` (vmap over stacked
        copies); its anomalies agree with the sequential loop to rounding.

    Attributes
    ----------
    anomalies_ : xarray.DataArray
        ``(subset, parameter)`` anomaly store, or ``(member, subset, parameter)``,
        with the predictors as coordinates.
    regressor_ : fitted regressor
        Fitted on the member-mean anomalies of the updated parameters.
    member_regressors_ : list of fitted regressors
        One per member (empty with one member).
    updated_ : numpy.ndarray of bool, shape (n_parameters,)
        Parameters that the child updates.
    histories_ : dict of str to TrainHistory
        Fine-tuning loss curves per subset (and member).
    """

    def __init__(
        self,
        parent: nn.Module,
        regressor: object | None = None,
        finetune: TrainConfig | None = None,
        space: ParameterSpace | None = None,
        members: int = 1,
        snr_threshold: float | None = None,
        engine: str = "sequential",
    ) -> None:
        if int(members) < 1:
            raise ValueError(f"members must be at least 1, got {members!r}.")
        if engine not in ("sequential", "batched"):
            raise ValueError(f"Unknown fine-tuning engine {engine!r}; choose 'sequential' or 'batched'.")
        self.engine = engine
        self.parent = copy.deepcopy(parent).eval()
        self.regressor = regressor if regressor is not None else WeightRegressor(method="ridge")
        self.finetune = finetune or DEFAULT_FINETUNE
        self.space = space if space is not None else AllParameters()
        self.members = int(members)
        self.snr_threshold = snr_threshold
        self.base_ = self.space.prepare(self.parent)
        self.theta0_ = self.space.vector(self.base_)
        self.layout_ = self.space.layout(self.base_)

    # Step 1 ---------------------------------------------------------------
    def fit_anomalies(
        self,
        subsets: Sequence[tuple[str, np.ndarray, np.ndarray]],
        predictors: np.ndarray,
        predictor_names: Sequence[str] | None = None,
        map_units: Callable[[list[tuple[str, Callable, tuple]]], Sequence] | None = None,
    ) -> ConditionalUpdate:
        """Fine-tune one fresh parent copy per subset and member, and store the anomalies.

        Parameters
        ----------
        subsets : sequence of (label, X, y)
            Standardised inputs ``(n_k, n_inputs)`` and targets ``(n_k, n_outputs)`` of each subset.
        predictors : array, shape (n_subsets, n_predictors)
            Predictor of each subset, computed without application targets.
        predictor_names : sequence of str, optional
            Names of the predictor columns; default ``predictor_0``, ...
        map_units : callable, optional
            Runs the units of work. It is called once with a list of
            ``(name, function, args)``, one :func:`finetune_unit` per (member,
            subset), or with engine ``"batched"`` one unit for all of them, and
            must return ``function(*args)`` of each, in order. For example
            :meth:`condupdate.jobs.distributed.UnitRunner.map` spreads them over a
            dask cluster and checkpoints them. Default: one after another in this process.
        """
        predictors = np.asarray(predictors, dtype="float64").reshape(len(subsets), -1)
        names = list(predictor_names or [f"predictor_{j}" for j in range(predictors.shape[1])])
        if len(names) != predictors.shape[1]:
            raise ValueError(f"Got {len(names)} predictor names for {predictors.shape[1]} predictor columns.")

        units = [(m, label, X, y) for m in range(self.members) for label, X, y in subsets]
        keys = [label if self.members == 1 else f"{label}/member {m}" for m, label, _, _ in units]
        # The subsets of one member share one seed: the shared batch-order noise then
        # largely cancels between anomalies instead of adding to their differences.
        seeds = [self.finetune.seed + m for m, *_ in units]
        if self.engine == "batched":
            from condupdate.update.batched import finetune_batched

            data = [(X, y) for _, _, X, y in units]
            tasks = [("fine-tune batched", finetune_batched, (self.parent, data, self.finetune, seeds, None, None, self.space))]
        else:
            tasks = [
                (f"fine-tune {key}", finetune_unit, (self.parent, self.space, X, y, self.finetune.replace(seed=seed), f"fine-tune {key}"))
                for key, seed, (_, _, X, y) in zip(keys, seeds, units, strict=True)
            ]
        if map_units is not None:
            results = list(map_units(tasks))
        else:
            show = self.finetune.progress and self.engine != "batched"
            results = [function(*args) for _, function, args in tqdm(tasks, desc="fine-tuning", disable=not show)]

        if self.engine == "batched":
            anomalies, histories = results[0]
        else:
            anomalies = np.stack([anomaly for anomaly, _ in results])
            histories = [history for _, history in results]
        self.histories_: dict[str, TrainHistory] = dict(zip(keys, histories, strict=True))
        per_member = []
        for m in range(self.members):
            rows = anomalies[m * len(subsets) : (m + 1) * len(subsets)]
            per_member.append(anomalies_to_dataarray(rows, [s[0] for s in subsets], predictors, names, self.layout_))

        if self.members == 1:
            self.anomalies_ = per_member[0]
        else:
            self.anomalies_ = xr.concat(per_member, dim="member").assign_coords(member=np.arange(self.members))
        return self

    def set_anomalies(self, anomalies: xr.DataArray) -> ConditionalUpdate:
        """Use a stored anomaly DataArray (for example from :func:`load_anomalies`) instead of fine-tuning."""
        if anomalies.sizes["parameter"] != self.theta0_.numel():
            raise ValueError(
                f"Anomaly store has {anomalies.sizes['parameter']} parameters; the parent has {self.theta0_.numel()} "
                f"moving parameters in {type(self.space).__name__}."
            )
        self.anomalies_ = anomalies
        return self

    def mean_anomalies(self) -> xr.DataArray:
        """Return the anomalies averaged over members, ``(subset, parameter)``."""
        self._check_anomalies()
        if "member" in self.anomalies_.dims:
            return self.anomalies_.mean("member", keep_attrs=True)
        return self.anomalies_

    def signal_to_noise(self) -> xr.DataArray:
        """Signal-to-noise ratio of each parameter's anomaly across subsets.

        Signal is the variance across subsets of the member means; noise is the
        mean over subsets of the variance across members (both with ddof=1), so a
        ratio near 1 or below means the subsets differ no more than fine-tuning
        seeds do. Needs at least two members. Parameters whose anomaly never varies
        get a ratio of 0.

        Returns
        -------
        xarray.DataArray
            Dims ``(parameter,)``, with the ``tensor`` coordinate of the store.
        """
        self._check_anomalies()
        if "member" not in self.anomalies_.dims or self.anomalies_.sizes["member"] < 2:
            raise ValueError("The signal-to-noise ratio needs anomalies from at least 2 members; set members >= 2.")
        signal = self.anomalies_.mean("member").var("subset", ddof=1)
        noise = self.anomalies_.var("member", ddof=1).mean("subset")
        ratio = xr.where(noise > 0, signal / noise.where(noise > 0), np.where(signal > 0, np.inf, 0.0))
        return ratio.rename("signal_to_noise").assign_attrs(units="1", long_name="anomaly signal-to-noise ratio")

    def _check_anomalies(self) -> None:
        if not hasattr(self, "anomalies_"):
            raise RuntimeError("No anomalies yet; call fit_anomalies() or set_anomalies() first.")

    # Step 2 ---------------------------------------------------------------
    def fit_regressor(self) -> ConditionalUpdate:
        """Fit the weight regressor on the stored (predictor, anomaly) pairs."""
        self._check_anomalies()
        X = predictor_matrix(self.anomalies_)
        updated = np.ones(self.anomalies_.sizes["parameter"], dtype=bool)
        if self.snr_threshold is not None:
            updated = np.asarray(self.signal_to_noise().values >= self.snr_threshold)
            logger.info("updating %d of %d parameters (signal-to-noise >= %g)", updated.sum(), updated.size, self.snr_threshold)
        self.updated_ = updated

        self.regressor_ = clone(self.regressor).fit(X, self.mean_anomalies().values[:, updated])
        self.member_regressors_ = []
        if "member" in self.anomalies_.dims:
            self.member_regressors_ = [
                clone(self.regressor).fit(X, self.anomalies_.isel(member=m).values[:, updated])
                for m in range(self.anomalies_.sizes["member"])
            ]
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
    def _predictors(self, predictors: np.ndarray) -> np.ndarray:
        if not hasattr(self, "regressor_"):
            raise RuntimeError("The weight regressor is not fitted; call fit() or fit_regressor() first.")
        predictors = np.asarray(predictors, dtype="float64")
        return predictors.reshape(-1, self.train_predictors_.shape[1])

    def _scatter(self, updated_values: np.ndarray) -> np.ndarray:
        # (..., n_updated) -> (..., n_parameters), zeros for parameters kept at the parent's values.
        out = np.zeros(updated_values.shape[:-1] + (self.updated_.size,))
        out[..., self.updated_] = updated_values
        return out

    def predict_anomaly(self, predictors: np.ndarray, member: int | None = None) -> np.ndarray:
        """Return predicted anomalies ``(n, n_parameters)`` at predictors ``(n, n_predictors)``.

        ``member`` selects the regressor fitted on one member's anomalies.
        """
        predictors = self._predictors(predictors)
        regressor = self.regressor_ if member is None else self.member_regressors_[member]
        values = np.asarray(regressor.predict(predictors)).reshape(len(predictors), -1)
        return self._scatter(values)

    def sample_anomalies(self, predictors: np.ndarray, n_samples: int, random_state: int | None = None) -> np.ndarray:
        """Draw anomalies ``(n_samples, n, n_parameters)`` from the regressor's posterior.

        Needs a regressor with a ``sample`` method (Bayesian ridge, Gaussian process).
        """
        predictors = self._predictors(predictors)
        if not hasattr(self.regressor_, "sample"):
            raise TypeError(
                f"Regressor {type(self.regressor_).__name__} has no posterior samples; use bayesian_ridge or gp, "
                "or build the ensemble from members."
            )
        draws = np.asarray(self.regressor_.sample(predictors, n_samples, random_state=random_state))
        return self._scatter(draws.reshape(n_samples, len(predictors), -1))

    def child(self, predictor: np.ndarray | Sequence[float] | float, member: int | None = None) -> nn.Module:
        """Build the child network ``theta0 + g(predictor)`` for one predictor value (or vector)."""
        delta = torch.as_tensor(self.predict_anomaly(np.atleast_1d(predictor), member)[0], dtype=self.theta0_.dtype)
        child = copy.deepcopy(self.parent)
        params = self.space.full_parameters(self.base_, self.theta0_ + delta)
        with torch.no_grad():
            for name, p in child.named_parameters():
                p.copy_(params[name])
        return child.eval()

    def predict(self, X: np.ndarray, predictors: np.ndarray, batch_size: int = 4096, member: int | None = None) -> np.ndarray:
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
        member : int, optional
            Use the regressor of one fine-tuning member.

        Returns
        -------
        numpy.ndarray, shape (n_samples, n_outputs)
            The network's outputs: for an MLP with ``head="gaussian"``, the means
            of the targets followed by their standard deviations.
        """
        return self._run(X, predictors, lambda P: self.predict_anomaly(P, member), batch_size)

    def predict_ensemble(
        self,
        X: np.ndarray,
        predictors: np.ndarray,
        source: str = "members",
        n_samples: int = 10,
        random_state: int | None = 0,
        batch_size: int = 4096,
    ) -> np.ndarray:
        """Predict with an ensemble of children, ``(n_members, n_samples, n_outputs)``.

        ``source="members"`` uses one child per fine-tuning member;
        ``source="posterior"`` draws ``n_samples`` anomaly sets from the
        regressor's posterior (seeded by ``random_state``).
        """
        if source == "members":
            if not self.member_regressors_:
                raise ValueError("A member ensemble needs members >= 2 when fitting.")
            return np.stack([self.predict(X, predictors, batch_size, member=m) for m in range(len(self.member_regressors_))])
        if source == "posterior":
            P = np.asarray(predictors, dtype="float64").reshape(len(X), -1)
            unique = np.unique(P, axis=0)
            draws = self.sample_anomalies(unique, n_samples, random_state)  # (n_samples, n_unique, n_parameters)
            out = []
            for k in range(n_samples):
                # _run finds the same distinct predictors (np.unique of the same P), so
                # draw k gives one child per distinct predictor in the same order.
                out.append(self._run(X, P, lambda _, d=draws[k]: d, batch_size))
            return np.stack(out)
        raise ValueError(f"Unknown ensemble source {source!r}; choose 'members' or 'posterior'.")

    def _run(self, X: np.ndarray, predictors: np.ndarray, anomaly_fn, batch_size: int) -> np.ndarray:
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        if len(X) == 0:
            with torch.no_grad():
                return self.parent(X).numpy()
        predictors = np.asarray(predictors, dtype="float64").reshape(len(X), -1)

        # Distinct predictors, then distinct weight vectors: a zero anomaly maps every
        # predictor to theta0 itself.
        unique, inverse = np.unique(predictors, axis=0, return_inverse=True)
        thetas = self.theta0_ + torch.as_tensor(anomaly_fn(unique), dtype=self.theta0_.dtype)
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
            params = self.space.full_parameters(self.base_, theta)
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
            params = self.space.full_parameters(self.base_, theta)
            return functional_call(self.parent, (params, buffers), (x[None],))[0]

        batched = vmap(run_one)
        outputs = []
        for start in range(0, len(X), batch_size):
            rows = slice(start, start + batch_size)
            # (batch, n_parameters) weights and (batch, n_inputs) inputs -> (batch, n_outputs)
            outputs.append(batched(thetas[sample_child[rows]], X[rows]))
        return torch.cat(outputs).numpy()

