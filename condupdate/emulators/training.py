"""The training loop shared by parent training and fine-tuning."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "TrainHistory", "train", "masked_mse", "masked_gaussian_nll", "loss_function"]

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one training run; every random choice is drawn from ``seed``."""

    epochs: int = 50  # maximum passes over the training samples
    batch_size: int = 1024  # samples per optimiser step
    learning_rate: float = 1e-3  # Adam step size
    weight_decay: float = 0.0  # L2 penalty applied by Adam (not decoupled)
    validation_fraction: float = 0.1  # share of samples held out for early stopping; 0 disables
    patience: int = 5  # epochs without validation improvement before stopping; 0 disables
    seed: int = 0  # seeds the validation split and the batch order
    progress: bool = False  # show a tqdm progress bar over epochs

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "validation_fraction": 0 <= self.validation_fraction < 1,
            "patience": self.patience >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"Invalid training option {name}={getattr(self, name)!r}; see TrainConfig for the allowed range.")

    def replace(self, **changes: object) -> TrainConfig:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass
class TrainHistory:
    """Loss per epoch (see :func:`loss_function`, on standardised targets) and the epoch kept."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1


def masked_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite target cells only.

    NaN targets (land, below ground, a variable missing at one sample) add nothing
    to the loss or its gradient.
    """
    mask = torch.isfinite(target)
    diff = torch.where(mask, prediction - torch.nan_to_num(target), torch.zeros_like(prediction))
    return diff.pow(2).sum() / mask.sum().clamp(min=1)


def masked_gaussian_nll(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood over the finite target cells only.

    ``prediction`` is ``(batch, 2 * n_outputs)``: the means, then the standard
    deviations, as :class:`~condupdate.emulators.MLP` with ``head="gaussian"``
    returns them; ``target`` is ``(batch, n_outputs)``. The per-cell loss is
    ``0.5 * (log(var) + (mean - y)**2 / var) + 0.5 * log(2 pi)``, the value of
    ``torch.nn.functional.gaussian_nll_loss(..., full=True, reduction="none")``
    for variances above its ``eps`` of 1e-6. NaN targets add nothing to the loss
    or its gradient, as in :func:`masked_mse`.
    """
    n_outputs = target.shape[-1]
    if prediction.shape[-1] != 2 * n_outputs:
        raise ValueError(
            f"A Gaussian loss needs a prediction with 2 * {n_outputs} columns (means, then standard deviations) "
            f"for {n_outputs} targets, got shape {tuple(prediction.shape)}; build the network with head='gaussian'."
        )
    mean, std = prediction[..., :n_outputs], prediction[..., n_outputs:]
    mask = torch.isfinite(target)
    # The formula is written out, in torch's order of operations, because
    # gaussian_nll_loss checks torch.any(var < 0) in Python, which cannot run
    # under torch.func.vmap in the batched fine-tuning engine.
    var = std.pow(2)
    cell = 0.5 * (torch.log(var) + (mean - torch.nan_to_num(target)) ** 2 / var)
    cell = cell + 0.5 * math.log(2 * math.pi)
    return torch.where(mask, cell, torch.zeros_like(cell)).sum() / mask.sum().clamp(min=1)


def loss_function(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return the training loss of ``model``: :func:`masked_gaussian_nll` for a Gaussian head, else :func:`masked_mse`.

    A network declares a Gaussian head with the attribute ``head = "gaussian"``,
    as :class:`~condupdate.emulators.MLP` does.
    """
    return masked_gaussian_nll if getattr(model, "head", "mean") == "gaussian" else masked_mse


def _evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    loss = loss_function(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            xb, yb = X[start : start + batch_size], y[start : start + batch_size]
            n = int(torch.isfinite(yb).sum())
            total += float(loss(model(xb), yb)) * n
            count += n
    model.train(was_training)
    return total / max(count, 1)


def train(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    config: TrainConfig | None = None,
    description: str = "training",
) -> TrainHistory:
    """Train ``model`` in place on ``(X, y)`` with Adam, early stopping and a masked loss.

    The loss is the mean squared error, or the Gaussian negative log-likelihood
    for a network with a Gaussian head (see :func:`loss_function`).

    The best weights on the validation samples are restored at the end. Given the
    same seed, data and thread count, two runs on the CPU give identical weights.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(batch, n_inputs)`` to ``(batch, n_outputs)``.
    X : array, shape (n_samples, n_inputs)
        Standardised inputs without NaN (drop incomplete samples first).
    y : array, shape (n_samples, n_outputs)
        Standardised targets; NaN cells are left out of the loss.
    config : TrainConfig, optional
    description : str
        Label of the progress bar and log lines.

    Returns
    -------
    TrainHistory
    """
    config = config or TrainConfig()
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y, dtype=np.float32))
    if y.ndim == 1:
        y = y[:, None]
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n_samples, n_inputs) and y (n_samples, n_outputs); got {tuple(X.shape)} and {tuple(y.shape)}.")
    if not torch.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values; drop incomplete samples before training.")
    if len(X) == 0:
        raise ValueError(f"No samples to train on in {description!r}.")

    # Phase 1: seeded validation split and batch order.
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(X))
    n_val = int(round(config.validation_fraction * len(X))) if len(X) >= 10 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    X_train, y_train = X[train_idx], y[train_idx]
    X_val, y_val = X[val_idx], y[val_idx]
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = loss_function(model)

    # Phase 2: optimise with a fresh optimiser; keep the best weights seen.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history = TrainHistory()
    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    model.train()
    epochs = tqdm(range(config.epochs), desc=description, disable=not config.progress, leave=False)
    for epoch in epochs:
        permutation = torch.randperm(len(X_train), generator=generator)
        running, steps = 0.0, 0
        for start in range(0, len(X_train), config.batch_size):
            batch = permutation[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(X_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            steps += 1
        history.train_loss.append(running / max(steps, 1))

        monitored = _evaluate(model, X_val, y_val, 8192) if n_val else history.train_loss[-1]
        history.val_loss.append(monitored)
        epochs.set_postfix(loss=f"{history.train_loss[-1]:.4g}", val=f"{monitored:.4g}")
        if monitored < best_loss:
            best_loss, best_state, stale = monitored, copy.deepcopy(model.state_dict()), 0
            history.best_epoch = epoch
        else:
            stale += 1
            if config.patience and stale >= config.patience:
                logger.info("%s: early stop at epoch %d, best epoch %d", description, epoch, history.best_epoch)
                break

    # Phase 3: restore the best weights.
    model.load_state_dict(best_state)
    model.eval()
    return history
