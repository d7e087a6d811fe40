"""Choose the conditional update on training data alone, by pseudo-extrapolation.

Which parameters should move (all, biases, the last layers, low-rank adapters)
and which weight regressor extrapolates best differ from problem to problem.
Looking at the application period to choose would leak its targets into the
result, so the choice is made inside the training data. The ``holdout`` training
subsets that lie furthest in the direction of the application predictors are
held out. Each candidate update is fine-tuned on the remaining (inner) subsets,
its children are built at the held-out subsets' predictors, and they are scored
on the held-out subsets' targets. The parent itself is the candidate ``none``,
so a run falls back to the parent when no update helps.

The direction of extrapolation comes from the application *predictors*, which
are known without targets. The application targets are never read here.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from condupdate._errors import ConfigError
from condupdate._io import atomic_path
from condupdate.emulators.training import TrainConfig, train
from condupdate.update.conditional import DEFAULT_FINETUNE, ConditionalUpdate
from condupdate.update.regressors import make_regressor
from condupdate.update.spaces import make_space

__all__ = [
    "Candidate",
    "NONE",
    "Selection",
    "ZeroAnomalyRegressor",
    "holdout_subsets",
    "score_candidates",
    "select_update",
    "write_selection_csv",
]

logger = logging.getLogger(__name__)

NONE = "none"  # name of the candidate that keeps the parent

# Columns of the table of held-out scores, one row per candidate.
SELECTION_COLUMNS = ("candidate", "parameters", "regressor", "rmse", "n_samples", "chosen", "error")


class ZeroAnomalyRegressor(RegressorMixin, BaseEstimator):
    """Weight regressor that predicts a zero anomaly everywhere, so the child is the parent.

    The fitted regressor of a run whose selection chose ``none``.

    Examples
    --------
    >>> ZeroAnomalyRegressor().fit(np.zeros((3, 1)), np.ones((3, 2))).predict(np.ones((1, 1)))
    array([[0., 0.]])
    """

    def fit(self, X: np.ndarray, y: np.ndarray) -> ZeroAnomalyRegressor:
        """Record the number of predictors and parameters; the values are not used."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        self.single_output_ = y.ndim == 1
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Return zeros of shape ``(n, n_parameters)``, or ``(n,)`` after a fit on one output column."""
        check_is_fitted(self, "n_outputs_")
        X = validate_data(self, X, reset=False)
        if self.single_output_:
            return np.zeros(len(X))
        return np.zeros((len(X), self.n_outputs_))


@dataclass(frozen=True)
class Candidate:
    """One candidate update: which parameters move and which weight regressor extrapolates them.

    ``parameters="none"`` is the parent itself.
    """

    parameters: str  # none, all, biases, last_layers or lora
    regressor: str = "ridge"  # a name of condupdate.update.REGRESSORS
    regressor_params: dict[str, Any] = field(default_factory=dict)
    n_layers: int = 1  # last_layers: how many layers with parameters move
    rank: int = 2  # lora: adapter rank

    @property
    def name(self) -> str:
        """Label used in logs and in ``selection.csv``, for example ``last_layers:2/linear``."""
        if self.parameters == NONE:
            return NONE
        space = self.parameters
        if self.parameters == "last_layers":
            space += f":{self.n_layers}"
        elif self.parameters == "lora":
            space += f":{self.rank}"
        params = "".join(f",{k}={v}" for k, v in sorted(self.regressor_params.items()))
        return f"{space}/{self.regressor}{params}"


@dataclass
class Selection:
    """Held-out scores of every candidate and the chosen one."""

    table: pd.DataFrame  # one row per candidate, columns SELECTION_COLUMNS
    chosen: Candidate
    holdout: list[str]  # labels of the held-out subsets
    inner: list[str]  # labels of the subsets the candidates were fine-tuned on
    parent: str  # "retrain" or "reuse"
    direction: np.ndarray  # (n_predictors,) unit vector of extrapolation in standardised predictor units
    config: Any = None  # with select_update: the run configuration with the chosen update filled in

    def regressor(self) -> BaseEstimator:
        """Build the unfitted weight regressor of the chosen candidate."""
        if self.chosen.parameters == NONE:
            return ZeroAnomalyRegressor()
        return make_regressor(self.chosen.regressor, **self.chosen.regressor_params)


# --------------------------------------------------------------------------- #
# The held-out subsets
# --------------------------------------------------------------------------- #


def _extrapolation_direction(subset_predictors: np.ndarray, application_predictor: np.ndarray) -> np.ndarray:
    # Unit vector from the mean training subset towards the mean application
    # predictor, in units of the training subsets' standard deviation per predictor.
    scale = subset_predictors.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    step = (application_predictor - subset_predictors.mean(axis=0)) / scale
    norm = np.linalg.norm(step)
    if norm == 0:
        # NOTE: the application predictors sit at the training mean, so there is no
        # direction of extrapolation. The high end of the first predictor is held out.
        logger.info("application predictors lie at the training mean; holding out the high end of the first predictor")
        step = np.zeros_like(step)
        step[0] = 1.0
        return step
    return step / norm


def holdout_subsets(subset_predictors: np.ndarray, application_predictor: np.ndarray, holdout: int) -> np.ndarray:
    """Return the indices of the ``holdout`` subsets that lie furthest towards the application predictors.

    Subsets are ranked by their projection on the direction from the mean of the
    subset predictors to the mean application predictor, both standardised by
    the spread of the subset predictors. With one predictor this is the end of
    the training range on the application side: the largest predictors when the
    application lies above the training range, the smallest when it lies below.

    Parameters
    ----------
    subset_predictors : array, shape (n_subsets, n_predictors)
        Predictor of each training subset.
    application_predictor : array, shape (n, n_predictors) or (n_predictors,)
        Predictors of the application samples (never their targets). NaN rows are ignored.
    holdout : int
        Number of subsets to hold out; at least 1, and at least 2 subsets must remain.

    Returns
    -------
    numpy.ndarray of int, shape (holdout,)
        Indices into ``subset_predictors``, furthest first.

    Examples
    --------
    >>> holdout_subsets(np.arange(5.0)[:, None], np.array([[9.0]]), 2)
    array([4, 3])
    >>> holdout_subsets(np.arange(5.0)[:, None], np.array([[-3.0]]), 2)
    array([0, 1])
    """
    return _holdout(subset_predictors, application_predictor, holdout)[0]


def _holdout(subset_predictors: np.ndarray, application_predictor: np.ndarray, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    # Indices of the held-out subsets and the unit direction of extrapolation.
    subset_predictors = np.asarray(subset_predictors, dtype="float64")
    if subset_predictors.ndim == 1:
        subset_predictors = subset_predictors[:, None]
    n_subsets, n_predictors = subset_predictors.shape
    application = np.asarray(application_predictor, dtype="float64").reshape(-1, n_predictors)
    application = application[np.isfinite(application).all(axis=1)]
    if isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer)) or holdout < 1:
        raise ValueError(f"holdout must be an integer of at least 1, got {holdout!r}.")
    if n_subsets - holdout < 2:
        raise ConfigError(
            f"Holding out {holdout} of {n_subsets} training subsets leaves {n_subsets - holdout}; the weight "
            f"regression needs at least 2. Lower update.select.holdout to at most {n_subsets - 2}, or use more subsets."
        )
    if len(application) == 0:
        raise ValueError("Every application predictor is NaN, so the direction of extrapolation is unknown.")

    direction = _extrapolation_direction(subset_predictors, application.mean(axis=0))
    scale = subset_predictors.std(axis=0)
    projection = ((subset_predictors - subset_predictors.mean(axis=0)) / np.where(scale > 0, scale, 1.0)) @ direction
    # Stable sort: among equal projections the later subset is held out first.
    order = np.argsort(-projection, kind="stable")
    return order[:holdout], direction


# --------------------------------------------------------------------------- #
# Scores of the candidates
# --------------------------------------------------------------------------- #


def _rmse(prediction: np.ndarray, y: np.ndarray) -> float:
    # NaN targets (masked cells, a target missing in a multi-target sample) are left
    # out. A NaN prediction of a known target makes the score NaN, so it is never chosen.
    known = np.isfinite(y)
    if not known.any():
        return float("nan")
    return float(np.sqrt(np.mean((prediction[known] - y[known]) ** 2)))


def _score_one(
    candidate: Candidate,
    parent: nn.Module,
    inner: list[tuple[str, np.ndarray, np.ndarray]],
    inner_predictors: np.ndarray,
    X_out: np.ndarray,
    Y_out: np.ndarray,
    P_out: np.ndarray,
    finetune: TrainConfig,
    engine: str,
) -> float:
    n_targets = Y_out.shape[1]
    if candidate.parameters == NONE:
        with torch.no_grad():
            prediction = copy.deepcopy(parent).eval()(torch.as_tensor(X_out, dtype=torch.float32)).numpy()
        return _rmse(prediction[:, :n_targets], Y_out)

    update = ConditionalUpdate(
        parent,
        make_regressor(candidate.regressor, **candidate.regressor_params),
        finetune,
        space=make_space(candidate.parameters, n_layers=candidate.n_layers, rank=candidate.rank, seed=finetune.seed),
        engine=engine,
    )
    update.fit(inner, inner_predictors)
    # One child per held-out sample's predictor, as the application children are built.
    prediction = update.predict(X_out, P_out)
    return _rmse(prediction[:, :n_targets], Y_out)


def score_candidates(
    parent: nn.Module,
    subsets: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    subset_predictors: np.ndarray,
    application_predictor: np.ndarray,
    candidates: Sequence[Candidate],
    holdout: int = 2,
    finetune: TrainConfig | None = None,
    train_parent: Callable[[np.ndarray, np.ndarray], nn.Module] | None = None,
    engine: str = "sequential",
) -> Selection:
    """Score each candidate update by pseudo-extrapolation to held-out training subsets.

    The subsets chosen by :func:`holdout_subsets` are held out. With
    ``train_parent``, a parent is retrained on the inner subsets, so no held-out
    sample reaches the update. Without it the given parent is reused, which is
    cheaper but lets the held-out subsets leak into the parent, and so favours
    ``none``. Each candidate is fine-tuned on the inner subsets with one member,
    its children are built at the held-out samples' predictors, and the RMSE of
    their predictions over every held-out sample is its score. The candidate
    ``none`` (the parent) is always scored, first. The lowest score wins, and a
    tie goes to the earlier candidate, so ``none`` wins ties.

    Parameters
    ----------
    parent : torch.nn.Module
        The parent trained on all subsets; it is copied, never modified.
    subsets : sequence of (label, X, y, predictors)
        Per training subset: standardised inputs ``(n_k, n_inputs)``, targets
        ``(n_k, n_targets)`` (NaN where missing) and per-sample predictors
        ``(n_k, n_predictors)``.
    subset_predictors : array, shape (n_subsets, n_predictors)
        Predictor of each subset, as the weight regression uses it.
    application_predictor : array, shape (n, n_predictors)
        Predictors of the application samples. Only their mean is used, to find
        the direction of extrapolation. The application targets are not an argument.
    candidates : sequence of Candidate
        Updates to compare; ``none`` is added in front when missing.
    holdout : int
        Number of subsets held out at the application end of the training range.
    finetune : TrainConfig, optional
        Fine-tuning settings of every candidate; default ``DEFAULT_FINETUNE``.
    train_parent : callable, optional
        ``train_parent(X, y)`` returns a new parent trained on the inner subsets'
        samples. Without it the given parent is reused.
    engine : {"sequential", "batched"}
        Fine-tuning engine of :class:`ConditionalUpdate`.

    Returns
    -------
    Selection
        ``table`` has the held-out RMSE in the units of ``y`` (standardised in a run).
        A candidate that fails to fit (for example a regressor that needs more
        subsets than remain) gets a NaN score and its error message, and is not chosen.
    """
    if len(subsets) != len(subset_predictors):
        raise ValueError(f"Got {len(subsets)} subsets but {len(subset_predictors)} subset predictors.")
    subset_predictors = np.asarray(subset_predictors, dtype="float64").reshape(len(subsets), -1)
    held_out, direction = _holdout(subset_predictors, application_predictor, holdout)
    inner_index = [k for k in range(len(subsets)) if k not in set(held_out.tolist())]
    unique: dict[str, Candidate] = {}
    for candidate in [Candidate(NONE), *candidates]:
        unique.setdefault(candidate.name, candidate)  # drop repeats, keep the order
    candidates = list(unique.values())

    inner = [(subsets[k][0], subsets[k][1], subsets[k][2]) for k in inner_index]
    X_out = np.concatenate([subsets[k][1] for k in held_out])
    Y_out = np.concatenate([subsets[k][2] for k in held_out])
    P_out = np.concatenate([np.asarray(subsets[k][3], dtype="float64").reshape(len(subsets[k][1]), -1) for k in held_out])
    if train_parent is not None:
        X_in = np.concatenate([X for _, X, _ in inner])
        Y_in = np.concatenate([y for _, _, y in inner])
        parent = train_parent(X_in, Y_in)

    rows = []
    for candidate in candidates:
        error = ""
        try:
            score = _score_one(
                candidate, parent, inner, subset_predictors[inner_index], X_out, Y_out, P_out, finetune or DEFAULT_FINETUNE, engine
            )
        except (ValueError, np.linalg.LinAlgError) as err:
            # A candidate that cannot be fitted on the inner subsets cannot be judged.
            logger.warning("update candidate %s failed on the inner subsets: %s", candidate.name, err)
            score, error = float("nan"), f"{type(err).__name__}: {err}"
        logger.info("update candidate %s: held-out RMSE %.6g", candidate.name, score)
        rows.append((candidate, score, error))

    scores = np.array([score for _, score, _ in rows])
    if not np.isfinite(scores).any():
        raise ValueError(
            "No candidate, the parent included, has a finite held-out RMSE: the held-out subsets have no "
            f"finite target or prediction ({[e for _, _, e in rows if e]})."
        )
    best = int(np.nanargmin(scores))
    table = pd.DataFrame(
        {
            "candidate": [c.name for c, _, _ in rows],
            "parameters": [c.parameters for c, _, _ in rows],
            "regressor": ["" if c.parameters == NONE else c.regressor for c, _, _ in rows],
            "rmse": scores,
            "n_samples": int(np.isfinite(Y_out).any(axis=1).sum()),
            "chosen": [k == best for k in range(len(rows))],
            "error": [e for _, _, e in rows],
        },
        columns=list(SELECTION_COLUMNS),
    )
    return Selection(
        table,
        rows[best][0],
        [subsets[k][0] for k in held_out],
        [subsets[k][0] for k in inner_index],
        "reuse" if train_parent is None else "retrain",
        direction,
    )


# --------------------------------------------------------------------------- #
# From a run configuration
# --------------------------------------------------------------------------- #


def _candidates(config) -> list[Candidate]:
    spec, regressor = config.update, config.regressor
    out = []
    for item in spec.select.candidates:
        if item.parameters == NONE:
            out.append(Candidate(NONE))
            continue
        method = item.regressor if item.regressor is not None else regressor.method
        # Regressor keywords of the run apply only to the run's own regressor.
        params = item.regressor_params if item.regressor is not None else {**regressor.params, **item.regressor_params}
        out.append(
            Candidate(
                item.parameters,
                method,
                dict(params),
                item.n_layers if item.n_layers is not None else spec.n_layers,
                item.rank if item.rank is not None else spec.rank,
            )
        )
    return out


def _chosen_config(config, chosen: Candidate):
    # The run then fine-tunes and saves the chosen update as if it had been configured.
    # For "none" the configuration is kept and the zero regressor makes the child the parent.
    if chosen.parameters == NONE:
        return config
    update = config.update.model_copy(
        update={"parameters": chosen.parameters, "n_layers": chosen.n_layers, "rank": chosen.rank}
    )
    regressor = config.regressor.model_copy(update={"method": chosen.regressor, "params": dict(chosen.regressor_params)})
    return config.model_copy(update={"update": update, "regressor": regressor})


def select_update(
    config,
    parent: nn.Module,
    X: np.ndarray,
    Y: np.ndarray,
    P: np.ndarray,
    labels: np.ndarray,
    subset_predictors: np.ndarray,
    application_predictor: np.ndarray,
) -> Selection:
    """Choose the update of a run from its ``update.select`` section, on training data only.

    Parameters
    ----------
    config : RunConfig
        With ``update.select`` set.
    parent : torch.nn.Module
        The parent trained on the whole training selection.
    X, Y, P : array, shape (n_samples, n_inputs), (n_samples, n_targets), (n_samples, n_predictors)
        Standardised inputs and targets and the predictors of the complete training samples.
    labels : array, shape (n_samples,)
        Subset label of each sample.
    subset_predictors : array, shape (n_subsets, n_predictors)
        Predictor of each subset, in the order in which labels first appear.
    application_predictor : array, shape (n, n_predictors)
        Predictors of the application samples, computed from their inputs.

    Returns
    -------
    Selection
        With ``config`` set to the run configuration that uses the chosen update.
    """
    spec = config.update.select
    order = list(dict.fromkeys(labels))
    subsets = [(str(label), X[labels == label], Y[labels == label], P[labels == label]) for label in order]
    finetune = TrainConfig(**config.finetune.model_dump())

    train_parent = None
    if spec.parent == "retrain":
        from condupdate.emulators import MLP

        def train_parent(X_inner: np.ndarray, Y_inner: np.ndarray) -> nn.Module:
            # Same architecture, seeds and settings as the run's parent, on the inner subsets only.
            inner_parent = MLP(X_inner.shape[1], Y_inner.shape[1], seed=config.training.seed, **config.emulator.model_dump())
            train(inner_parent, X_inner, Y_inner, TrainConfig(**config.training.model_dump()), description="parent (selection)")
            return inner_parent

    selection = score_candidates(
        parent,
        subsets,
        subset_predictors,
        application_predictor,
        _candidates(config),
        holdout=spec.holdout,
        finetune=finetune,
        train_parent=train_parent,
        engine=config.update.engine,
    )
    selection.config = _chosen_config(config, selection.chosen)
    best = selection.table.loc[selection.table.chosen].iloc[0]
    logger.info(
        "run %s: update selection chose %s (held-out RMSE %.4g on subsets %s, parent %s)",
        config.name,
        selection.chosen.name,
        best.rmse,
        ", ".join(selection.holdout),
        selection.parent,
    )
    return selection


def write_selection_csv(selection: Selection, path) -> None:
    """Write the held-out score of every candidate to ``path`` (atomically), one row per candidate."""
    table = selection.table.assign(holdout=" ".join(selection.holdout), parent=selection.parent)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
