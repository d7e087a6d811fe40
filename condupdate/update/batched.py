"""Batched forgetful fine-tuning: many fresh copies of the parent trained at once.

Member k is a fresh copy of the parent fine-tuned on subset k with its own seed,
exactly as :func:`condupdate.emulators.train` fine-tunes one copy. Here the
copies run as one vectorised computation. Their moving parameters are stacked
into a ``(member, parameter)`` matrix, and the forward pass and masked loss run
under ``torch.func.vmap`` over ``torch.func.functional_call``. One backward pass
of the summed member losses returns every member's own gradient, because the
members share no parameters. Adam then runs on the stacked tensors with one step
count per member.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from condupdate._errors import CondupdateWarning
from condupdate.emulators.training import TrainConfig, TrainHistory, loss_function
from condupdate.update.params import unflatten
from condupdate.update.spaces import AllParameters, ParameterSpace

__all__ = ["MemoryBudgetWarning", "estimate_member_bytes", "finetune_batched"]

logger = logging.getLogger(__name__)

Layout = list[tuple[str, tuple[int, ...]]]

# train() builds torch.optim.Adam with its default betas and eps. Reading them
# from the signature keeps the two optimisers equal if torch changes them.
_ADAM_PARAMETERS = inspect.signature(torch.optim.Adam).parameters
_BETA1, _BETA2 = _ADAM_PARAMETERS["betas"].default
_EPS = _ADAM_PARAMETERS["eps"].default

# Rows per validation forward pass. train() evaluates in chunks of this size and
# sums chunk losses weighted by their finite-target counts, so the validation loss
# is reproduced only with the same chunks.
_VALIDATION_ROWS = 8192

# Copies of the (parameter,) vector that one member needs. Seven are kept for the
# whole run: weights, best weights, gradient, two Adam moments, and the Adam
# denominator and update. Up to five more exist during a step: the gradients that
# autograd returns per tensor, and row gathers of weights and moments.
_PARAMETER_COPIES = 12

# Memory budget when neither the caller nor the system reports one.
_FALLBACK_BUDGET_BYTES = 2**30


class MemoryBudgetWarning(CondupdateWarning):
    """One member alone needs more memory than the budget allows."""


@dataclass
class _Member:
    """The training and validation samples of one member, split as train() splits them."""

    X_train: torch.Tensor  # (n_train, n_inputs)
    y_train: torch.Tensor  # (n_train, n_outputs)
    X_val: torch.Tensor  # (n_val, n_inputs)
    y_val: torch.Tensor  # (n_val, n_outputs)
    seed: int

    def n_steps(self, batch_size: int) -> int:
        return math.ceil(len(self.X_train) / batch_size)


def _validation_size(n_samples: int, validation_fraction: float) -> int:
    # train() holds out no validation samples from subsets of fewer than 10 samples.
    return int(round(validation_fraction * n_samples)) if n_samples >= 10 else 0


def _split_member(X: object, y: object, config: TrainConfig, seed: int, index: int) -> _Member:
    # The same conversion, checks and seeded validation split as train().
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y, dtype=np.float32))
    if y.ndim == 1:
        y = y[:, None]
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(
            f"Subset {index}: X must be (n_samples, n_inputs) and y (n_samples, n_outputs), "
            f"but they are {tuple(X.shape)} and {tuple(y.shape)}."
        )
    if not torch.isfinite(X).all():
        raise ValueError(
            f"Subset {index}: X contains NaN or infinite values. Drop incomplete samples before fine-tuning."
        )
    if len(X) == 0:
        raise ValueError(f"Subset {index} has no samples. Remove it or give it samples before fine-tuning.")

    order = np.random.default_rng(seed).permutation(len(X))
    n_val = _validation_size(len(X), config.validation_fraction)
    val_idx, train_idx = order[:n_val], order[n_val:]
    return _Member(X[train_idx], y[train_idx], X[val_idx], y[val_idx], int(seed))


def _stack_padded(tensors: Sequence[torch.Tensor], rows: int, fill: float, device: torch.device) -> torch.Tensor:
    # (member, rows, features): each member's rows first, then `fill` up to `rows`.
    out = torch.full((len(tensors), rows, tensors[0].shape[1]), fill, dtype=tensors[0].dtype)
    for k, tensor in enumerate(tensors):
        out[k, : len(tensor)] = tensor
    return out.to(device)


class _StackedAdam:
    """torch.optim.Adam (L2 weight decay, no amsgrad) on a ``(member, parameter)`` matrix.

    Each member keeps its own step count, so a member that skips a step keeps its
    bias correction. The update repeats, operation by operation and in the same
    order, ``_single_tensor_adam`` in torch/optim/adam.py (torch 2.13), which
    torch.optim.Adam runs for CPU tensors. With identical gradients a member's
    weights then match a sequential run bit for bit on the CPU. For CUDA tensors
    torch.optim.Adam uses its foreach implementation, which orders the same
    arithmetic differently, so there the two agree to rounding only.
    """

    def __init__(self, theta: torch.Tensor, learning_rate: float, weight_decay: float) -> None:
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.exp_avg = torch.zeros_like(theta)  # (member, parameter)
        self.exp_avg_sq = torch.zeros_like(theta)  # (member, parameter)
        self.steps = [0] * len(theta)
        # Work buffers reused at every step. With glibc malloc, a fresh tensor this
        # large is usually a new memory mapping whose pages the kernel zeroes, which
        # can cost more than the arithmetic.
        self._denom = torch.empty_like(theta)
        self._update = torch.empty_like(theta)

    def step(self, theta: torch.Tensor, grad: torch.Tensor, members: list[int]) -> None:
        """Update rows ``members`` of ``theta`` in place with their gradients ``grad`` (member, parameter).

        ``grad`` is overwritten when weight decay is on.
        """
        rows = _row_selector(members, theta.device)
        leading = isinstance(rows, slice)
        # A leading block of rows is a view, so the in-place updates below reach
        # the stored tensors directly. Other rows are gathered and written back.
        param, exp_avg, exp_avg_sq = theta[rows], self.exp_avg[rows], self.exp_avg_sq[rows]
        denom, update = self._denom[: len(members)], self._update[: len(members)]

        # Bias corrections in Python floats as torch does, one per member: (member, 1).
        for k in members:
            self.steps[k] += 1
        steps = [float(self.steps[k]) for k in members]
        step_size = [-self.learning_rate / (1 - _BETA1**n) for n in steps]
        bias_correction2_sqrt = [(1 - _BETA2**n) ** 0.5 for n in steps]
        step_size = torch.tensor(step_size, dtype=theta.dtype, device=theta.device)[:, None]
        bias_correction2_sqrt = torch.tensor(bias_correction2_sqrt, dtype=theta.dtype, device=theta.device)[:, None]

        if self.weight_decay != 0:
            grad.add_(param, alpha=self.weight_decay)
        exp_avg.lerp_(grad, 1 - _BETA1)
        exp_avg_sq.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
        torch.sqrt(exp_avg_sq, out=denom).div_(bias_correction2_sqrt).add_(_EPS)
        # torch's addcdiv_(exp_avg, denom, value=-step_size) evaluates
        # param + (value * exp_avg) / denom; this order keeps its rounding.
        torch.mul(step_size, exp_avg, out=update).div_(denom)
        param.add_(update)

        if not leading:
            theta.index_copy_(0, rows, param)
            self.exp_avg.index_copy_(0, rows, exp_avg)
            self.exp_avg_sq.index_copy_(0, rows, exp_avg_sq)


def _row_selector(members: list[int], device: torch.device) -> slice | torch.Tensor:
    # Rows 0..n-1 become a slice, which indexes without a copy. Any other rows become an index tensor.
    if members == list(range(len(members))):
        return slice(0, len(members))
    return torch.tensor(members, device=device)


def _check_module(parent: nn.Module) -> list[tuple[str, nn.Parameter]]:
    # Returns the moving parameters: those train() lets Adam move.
    for name, module in parent.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            raise NotImplementedError(
                f"Module {name or type(parent).__name__} is {type(module).__name__}(p={module.p}). Batched fine-tuning "
                "cannot reproduce the random dropout masks of a sequential run. Use train() for this network."
            )
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise NotImplementedError(
                f"Module {name or type(parent).__name__} is {type(module).__name__}, which updates running "
                "statistics in training. Batched fine-tuning supports only modules without such state. "
                "Use train() for this network."
            )
    moving = [(name, p) for name, p in parent.named_parameters() if p.requires_grad]
    if not moving:
        raise ValueError(
            f"{type(parent).__name__} has no parameters that require gradients, so there is nothing to fine-tune."
        )
    return moving


@dataclass
class _Probe:
    """Gradient and memory facts from one forward and backward pass of the parent."""

    unused: set[str]  # moving parameters without a gradient, which Adam never moves
    saved_bytes: int  # activations saved for backward on one batch, parameters excluded
    largest_saved_row_bytes: float  # bytes per sample of the largest saved activation


def _probe_parent(parent: nn.Module, n_inputs: int, n_outputs: int, batch_size: int) -> _Probe:
    probe = copy.deepcopy(parent).train()
    parameter_storages = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    device = next(probe.parameters()).device
    X = torch.zeros(batch_size, n_inputs, device=device)
    y = torch.zeros(batch_size, n_outputs, device=device)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_function(probe)(probe(X), y)
    loss.backward()

    unused = {name for name, p in probe.named_parameters() if p.requires_grad and p.grad is None}
    largest = max(saved.values(), default=0)
    return _Probe(unused, sum(saved.values()), largest / batch_size)


def _member_bytes(
    n_parameters: int, itemsize: int, probe: _Probe, batch_size: int, n_train: int, n_val: int, n_features: int
) -> int:
    # Activation gradients in backward are about as large as the saved activations,
    # hence twice the saved bytes. A validation chunk runs without gradients and
    # needs memory for about three of its largest activations at once.
    train_activations = 2 * probe.saved_bytes
    val_activations = 3 * probe.largest_saved_row_bytes * min(n_val, _VALIDATION_ROWS)
    # float32 samples padded to the largest subset, stored and gathered in batch order.
    data = (2 * (n_train + batch_size) + n_val) * n_features * 4
    return int(_PARAMETER_COPIES * n_parameters * itemsize + max(train_activations, val_activations) + data)


def estimate_member_bytes(
    parent: nn.Module,
    subsets: Sequence[tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]],
    config: TrainConfig,
) -> int:
    """Estimate the memory that one member of :func:`finetune_batched` needs, in bytes.

    The estimate adds three parts. The first is twelve copies of the moving
    parameters (weights, best weights, gradient, Adam moments and temporaries of
    the Adam step). The second is the activations of one training batch,
    measured with a forward and backward pass of the parent. The third is the
    member's samples, padded to the largest subset.

    Parameters
    ----------
    parent : torch.nn.Module
        The parent network, mapping ``(batch, n_inputs)`` to ``(batch, n_outputs)``.
    subsets : sequence of (X, y)
        Inputs ``(n_k, n_inputs)`` and targets ``(n_k, n_outputs)`` or ``(n_k,)`` of each subset.
    config : TrainConfig
        Fine-tuning settings; ``batch_size`` and ``validation_fraction`` matter here.

    Returns
    -------
    int
        Estimated bytes per member [B].

    Examples
    --------
    >>> import numpy as np
    >>> from condupdate.emulators import MLP, TrainConfig
    >>> rng = np.random.default_rng(0)
    >>> subsets = [(rng.standard_normal((500, 3)), rng.standard_normal(500))]
    >>> estimate_member_bytes(MLP(3, 1, width=8, seed=0), subsets, TrainConfig(batch_size=64)) > 0
    True
    """
    if len(subsets) == 0:
        raise ValueError("subsets is empty. Give at least one (X, y) pair to estimate the memory of.")
    moving = _check_module(parent)
    X0, y0 = np.asarray(subsets[0][0]), np.asarray(subsets[0][1])
    n_inputs, n_outputs = X0.shape[1], (1 if y0.ndim == 1 else y0.shape[1])
    sizes = [len(X) for X, _ in subsets]
    n_val = max(_validation_size(n, config.validation_fraction) for n in sizes)
    n_train = max(n - _validation_size(n, config.validation_fraction) for n in sizes)

    probe = _probe_parent(parent, n_inputs, n_outputs, max(min(config.batch_size, n_train), 1))
    n_parameters = sum(p.numel() for name, p in moving if name not in probe.unused)
    return _member_bytes(
        n_parameters, moving[0][1].element_size(), probe, config.batch_size, n_train, n_val, n_inputs + n_outputs
    )


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _choose_chunk_size(
    n_members: int, member_bytes: int, memory_budget_bytes: int | None, device: torch.device
) -> int:
    if memory_budget_bytes is None:
        available = _available_bytes(device)
        # Half of the free memory, leaving the rest to the caller and the allocator.
        memory_budget_bytes = available // 2 if available else _FALLBACK_BUDGET_BYTES
    chunk = memory_budget_bytes // max(member_bytes, 1)
    if chunk < 1:
        warnings.warn(
            f"One member needs about {member_bytes / 2**20:.1f} MiB, more than the memory budget of "
            f"{memory_budget_bytes / 2**20:.1f} MiB, so members are fine-tuned one at a time. "
            "Raise memory_budget_bytes or lower batch_size if this runs out of memory.",
            MemoryBudgetWarning,
            stacklevel=3,
        )
    return int(min(max(chunk, 1), n_members))


def _vmapped_loss(template: nn.Module) -> Callable[..., torch.Tensor]:
    """Return ``loss(params, X, y)`` over members.

    ``params`` maps parameter names to ``(member, *shape)`` tensors, ``X`` is
    ``(member, batch, n_inputs)`` and ``y`` is ``(member, batch, n_outputs)``. The
    result is ``(member,)``. The loss is the one ``train()`` uses for the
    template (:func:`condupdate.emulators.training.loss_function`).
    """
    member_loss_fn = loss_function(template)

    def member_loss(params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return member_loss_fn(functional_call(template, params, (X,)), y)

    return vmap(member_loss)


def _loss_and_grad(
    loss: Callable[..., torch.Tensor],
    theta: torch.Tensor,
    layout: Layout,
    X: torch.Tensor,
    y: torch.Tensor,
    grad_buffer: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the losses (member,) and gradients (member, parameter) at weights ``theta`` (member, parameter).

    The gradients are written into the leading rows of ``grad_buffer``.
    """
    # One leaf per parameter tensor rather than one flat leaf: the backward pass
    # of a flat leaf would build a full (member, parameter) gradient per tensor and add them up.
    leaves = {name: tensor.detach().requires_grad_(True) for name, tensor in unflatten(theta, layout).items()}
    losses = loss(leaves, X, y)
    grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
    grad = torch.cat([g.reshape(len(theta), -1) for g in grads], dim=1, out=grad_buffer[: len(theta)])
    return losses.detach(), grad


def _validation_losses(
    loss: Callable[..., torch.Tensor],
    theta: torch.Tensor,
    layout: Layout,
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    members: list[int],
) -> list[float]:
    # The chunked, count-weighted mean of train()'s evaluation, for rows `members`.
    rows = _row_selector(members, theta.device)
    params = theta[rows]
    totals, counts = [0.0] * len(members), [0] * len(members)
    with torch.no_grad():
        for start in range(0, X_val.shape[1], _VALIDATION_ROWS):
            stop = min(start + _VALIDATION_ROWS, X_val.shape[1])
            X, y = X_val[rows, start:stop], y_val[rows, start:stop]  # (member, chunk, features)
            chunk_losses = loss(unflatten(params, layout), X, y).tolist()
            chunk_counts = torch.isfinite(y).sum(dim=(1, 2)).tolist()
            for i, (value, n) in enumerate(zip(chunk_losses, chunk_counts)):
                totals[i] += value * n
                counts[i] += n
    return [total / max(count, 1) for total, count in zip(totals, counts)]


class _EarlyStopping:
    """Best monitored loss, epochs without improvement and stop flag of each member, tracked as train() does."""

    def __init__(self, n_members: int, patience: int) -> None:
        self.patience = patience
        self.best_loss = [float("inf")] * n_members
        self.stale = [0] * n_members
        self.stopped = [False] * n_members

    def improved(self, member: int, monitored: float) -> bool:
        """Record one epoch's monitored loss of ``member``; return whether it is the best so far."""
        if monitored < self.best_loss[member]:
            self.best_loss[member], self.stale[member] = monitored, 0
            return True
        self.stale[member] += 1
        if self.patience and self.stale[member] >= self.patience:
            self.stopped[member] = True
        return False


def _finetune_chunk(
    template: nn.Module,
    layout: Layout,
    theta0: torch.Tensor,
    members: list[_Member],
    config: TrainConfig,
    description: str,
    width: int,
    n_val_rows: int,
) -> tuple[torch.Tensor, list[TrainHistory]]:
    """Fine-tune one chunk of members; return their best weights (member, parameter) and histories.

    Every batch is padded to ``width`` rows and every validation set to
    ``n_val_rows`` rows. Both sizes come from all members, not from this chunk,
    so that a member's arithmetic, and with it its rounding, is the same whatever
    chunk it runs in.
    """
    # NOTE: everything runs on the parent's device, but so far only the CPU path has been run and tested.
    device = theta0.device
    n_members = len(members)
    batch_size = config.batch_size
    n_steps = [member.n_steps(batch_size) for member in members]

    # Samples padded to the largest member. Row pad_row is padding in every
    # member, and padded targets are NaN, so the masked loss leaves padded rows out of
    # the loss and its gradient.
    pad_row = max(len(m.X_train) for m in members)
    # (member, row, n_inputs) and (member, row, n_outputs)
    X_train = _stack_padded([m.X_train for m in members], pad_row + 1, 0.0, device)
    y_train = _stack_padded([m.y_train for m in members], pad_row + 1, float("nan"), device)
    X_val = _stack_padded([m.X_val for m in members], n_val_rows, 0.0, device)
    y_val = _stack_padded([m.y_val for m in members], n_val_rows, float("nan"), device)
    generators = [torch.Generator().manual_seed(m.seed) for m in members]

    loss = _vmapped_loss(template)
    theta = theta0.expand(n_members, -1).clone()  # (member, parameter)
    best = theta.clone()
    adam = _StackedAdam(theta, config.learning_rate, config.weight_decay)
    grad_buffer = torch.empty_like(theta)
    histories = [TrainHistory() for _ in members]
    stopping = _EarlyStopping(n_members, config.patience)

    epochs = tqdm(range(config.epochs), desc=description, disable=not config.progress, leave=False)
    for epoch in epochs:
        live = [k for k in range(n_members) if not stopping.stopped[k]]
        if not live:
            break

        # Phase 1: this epoch's batches, one permutation per member from its own
        # generator, padded with pad_row, and the samples gathered in that order:
        # (member, step * batch_size, features).
        max_steps = max(n_steps[k] for k in live)
        batches = torch.full((n_members, max_steps * batch_size), pad_row, dtype=torch.long)
        for k in live:
            batches[k, : len(members[k].X_train)] = torch.randperm(len(members[k].X_train), generator=generators[k])
        batches = batches.to(device)
        every_member = torch.arange(n_members, device=device)[:, None]
        X_epoch, y_epoch = X_train[every_member, batches], y_train[every_member, batches]

        # Phase 2: one Adam step per batch for every member that still has a batch.
        # Members come sorted by decreasing number of batches, so until one stops
        # early the active members are a leading block of rows, selected without a copy.
        template.train()
        running = [0.0] * n_members
        for step in range(max_steps):
            active = [k for k in live if step < n_steps[k]]
            rows = _row_selector(active, device)
            columns = slice(step * batch_size, step * batch_size + width)
            X = X_epoch[rows, columns]  # (member, batch, n_inputs)
            y = y_epoch[rows, columns]  # (member, batch, n_outputs)

            losses, grad = _loss_and_grad(loss, theta[rows], layout, X, y, grad_buffer)
            adam.step(theta, grad, active)
            for k, value in zip(active, losses.tolist()):
                running[k] += value

        # Phase 3: per-member validation, early stopping and best weights.
        template.eval()
        with_val = [k for k in live if len(members[k].X_val)]
        val_losses = {}
        if with_val:
            val_losses = dict(zip(with_val, _validation_losses(loss, theta, layout, X_val, y_val, with_val)))
        for k in live:
            history = histories[k]
            history.train_loss.append(running[k] / max(n_steps[k], 1))
            history.val_loss.append(val_losses.get(k, history.train_loss[-1]))
            if stopping.improved(k, history.val_loss[-1]):
                best[k] = theta[k]
                history.best_epoch = epoch
            elif stopping.stopped[k]:
                logger.debug("%s: member %d stopped early at epoch %d", description, k, epoch)

    n_stopped = sum(stopping.stopped)
    if n_stopped:
        logger.info("%s: %d of %d members stopped early", description, n_stopped, n_members)
    return best, histories


def _check_arguments(
    subsets: Sequence[tuple[object, object]],
    config: TrainConfig,
    seeds: Sequence[int] | None,
    memory_budget_bytes: int | None,
    chunk_size: int | None,
    space: ParameterSpace | None,
) -> list[int]:
    # Returns one seed per subset.
    if space is not None and not isinstance(space, AllParameters):
        raise NotImplementedError(
            f"finetune_batched moves every parameter, so it supports only space=AllParameters(), not "
            f"{type(space).__name__}. Use ConditionalUpdate.fit_anomalies, which fine-tunes sequentially, "
            "for this space."
        )
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    if len(subsets) == 0:
        raise ValueError("subsets is empty. Give at least one (X, y) pair to fine-tune on.")
    seeds = [config.seed] * len(subsets) if seeds is None else [int(seed) for seed in seeds]
    if len(seeds) != len(subsets):
        raise ValueError(f"Got {len(seeds)} seeds for {len(subsets)} subsets. Give one seed per subset or none.")
    if memory_budget_bytes is not None and memory_budget_bytes < 1:
        raise ValueError(f"memory_budget_bytes must be a positive number of bytes, got {memory_budget_bytes!r}.")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be at least 1 member, got {chunk_size!r}.")
    return seeds


def _split_members(subsets: Sequence[tuple[object, object]], config: TrainConfig, seeds: list[int]) -> list[_Member]:
    members = [_split_member(X, y, config, seed, k) for k, ((X, y), seed) in enumerate(zip(subsets, seeds))]
    n_inputs, n_outputs = members[0].X_train.shape[1], members[0].y_train.shape[1]
    for k, member in enumerate(members):
        if member.X_train.shape[1] != n_inputs or member.y_train.shape[1] != n_outputs:
            raise ValueError(
                f"Subset {k} has {member.X_train.shape[1]} inputs and {member.y_train.shape[1]} outputs, but "
                f"subset 0 has {n_inputs} and {n_outputs}. Every subset must have the parent's inputs and outputs."
            )
    return members


def finetune_batched(
    parent: nn.Module,
    subsets: Sequence[tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]],
    config: TrainConfig,
    seeds: Sequence[int] | None = None,
    memory_budget_bytes: int | None = None,
    chunk_size: int | None = None,
    space: ParameterSpace | None = None,
) -> tuple[np.ndarray, list[TrainHistory]]:
    """Fine-tune one fresh copy of the parent per subset, all copies at once, and return the anomalies.

    Member k starts from the parent with fresh Adam moments and trains on
    subset k with seed ``seeds[k]``, repeating :func:`condupdate.emulators.train`:
    the same validation split, batch order, masked loss, Adam update, early
    stopping and restore of the best weights. A member that stops early keeps its
    weights while the others go on. A member whose subset has fewer batches in an
    epoch sits out the remaining steps of that epoch, so its Adam state does not
    change there. The anomalies agree with a sequential run to rounding, not bit
    for bit: gradients from batched matrix products differ from unbatched ones
    in the last bits, and training carries that difference forward. The tests
    check agreement within a relative tolerance of 1e-5 on small MLPs on the CPU.

    Members run in chunks that fit ``memory_budget_bytes``. Every member's
    computation is independent of the others, so the chunk size does not change
    the result.

    Parameters
    ----------
    parent : torch.nn.Module
        The trained emulator, mapping ``(batch, n_inputs)`` to ``(batch, n_outputs)``.
        It is not modified. Its forward pass must run under ``torch.func.vmap``,
        without dropout or batch normalisation.
    subsets : sequence of (X, y)
        Standardised inputs ``(n_k, n_inputs)`` without NaN and targets
        ``(n_k, n_outputs)`` (or ``(n_k,)``) of each subset. NaN targets are left
        out of the loss.
    config : TrainConfig
        Fine-tuning settings. ``config.seed`` is ignored when ``seeds`` is given,
        and ``config.progress`` shows one progress bar per chunk.
    seeds : sequence of int, optional
        Seed of each member's validation split and batch order, one per subset;
        default ``config.seed`` for every member.
    memory_budget_bytes : int, optional
        Memory that one chunk of members may use [B]; default half of the memory
        that is free on the parent's device when the call starts.
    chunk_size : int, optional
        Members per chunk; overrides the size chosen from the memory budget.
    space : ParameterSpace, optional
        Which parameters move. Only ``AllParameters`` (the default) is supported.

    Returns
    -------
    anomalies : numpy.ndarray of float32, shape (n_subsets, n_parameters)
        Fine-tuned minus parent weights, in the order of ``AllParameters().vector``:
        parameters that require gradients, in ``named_parameters`` order.
    histories : list of TrainHistory
        Loss curves and best epoch of each member.

    Raises
    ------
    NotImplementedError
        For a parameter space other than ``AllParameters``, or a network with
        dropout or batch normalisation.

    Examples
    --------
    >>> import numpy as np
    >>> from condupdate.emulators import MLP, TrainConfig
    >>> parent = MLP(3, 1, width=8, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> subsets = [(rng.standard_normal((n, 3)), rng.standard_normal(n)) for n in (40, 60, 90)]
    >>> config = TrainConfig(epochs=3, batch_size=16, patience=0)
    >>> anomalies, histories = finetune_batched(parent, subsets, config, seeds=[0, 0, 0])
    >>> anomalies.shape
    (3, 113)
    """
    # Validate.
    seeds = _check_arguments(subsets, config, seeds, memory_budget_bytes, chunk_size, space)
    moving = _check_module(parent)

    # Prepare: split every subset, then find the parameters that get gradients.
    members = _split_members(subsets, config, seeds)
    n_inputs, n_outputs = members[0].X_train.shape[1], members[0].y_train.shape[1]
    n_max = max(len(m.X_train) for m in members)
    probe = _probe_parent(parent, n_inputs, n_outputs, max(min(config.batch_size, n_max), 1))
    trained = [(name, p) for name, p in moving if name not in probe.unused]
    if not trained:
        raise ValueError(
            f"No parameter of {type(parent).__name__} receives a gradient from the loss, so nothing can move."
        )
    layout: Layout = [(name, tuple(p.shape)) for name, p in trained]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in trained])  # (n_trained,)

    template = copy.deepcopy(parent)
    for p in template.parameters():
        p.requires_grad_(False)

    n_val_max = max(len(m.X_val) for m in members)
    if chunk_size is None:
        member_bytes = _member_bytes(
            theta0.numel(), theta0.element_size(), probe, config.batch_size, n_max, n_val_max, n_inputs + n_outputs
        )
        chunk_size = _choose_chunk_size(len(members), member_bytes, memory_budget_bytes, theta0.device)
    chunk_size = min(int(chunk_size), len(members))

    # Compute chunk by chunk, in order of decreasing subset size. Members of
    # similar size then share a chunk and run out of batches at about the same step.
    order = sorted(range(len(members)), key=lambda k: -len(members[k].X_train))
    best = torch.empty(len(members), theta0.numel(), dtype=theta0.dtype, device=theta0.device)
    histories: list[TrainHistory | None] = [None] * len(members)
    for start in range(0, len(members), chunk_size):
        chunk = order[start : start + chunk_size]
        description = f"batched fine-tuning, members {start + 1}-{start + len(chunk)} of {len(members)}"
        logger.info("%s", description)
        chunk_best, chunk_histories = _finetune_chunk(
            template,
            layout,
            theta0,
            [members[k] for k in chunk],
            config,
            description,
            min(config.batch_size, n_max),
            n_val_max,
        )
        best[torch.tensor(chunk, device=best.device)] = chunk_best
        for k, history in zip(chunk, chunk_histories):
            histories[k] = history

    # Wrap: anomalies over every moving parameter, in the order of
    # AllParameters().vector. Parameters without a gradient are never moved by
    # torch.optim.Adam (it skips them, even under weight decay), so their anomaly is zero.
    trained_names = {name for name, _ in trained}
    columns = torch.cat([torch.full((p.numel(),), name in trained_names, dtype=torch.bool) for name, p in moving])
    anomalies = torch.zeros(len(members), columns.numel(), dtype=theta0.dtype, device=theta0.device)
    anomalies[:, columns.to(anomalies.device)] = best - theta0
    return anomalies.cpu().numpy(), [h for h in histories if h is not None]
