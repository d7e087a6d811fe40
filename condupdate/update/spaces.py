"""Parameter spaces: which parameters of the parent move during fine-tuning.

A space prepares a copy of the parent for fine-tuning, reads the moving
parameters of a fine-tuned copy as one flat vector (the space in which anomalies
live), and turns such a vector back into the full set of parent parameters for
``torch.func.functional_call``. The parent itself is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from condupdate.update.params import unflatten

__all__ = ["ParameterSpace", "AllParameters", "SelectedParameters", "LowRankAdapters", "make_space"]

Layout = list[tuple[str, tuple[int, ...]]]


class ParameterSpace:
    """Base class: every parameter moves. Subclasses restrict or reparametrise."""

    def prepare(self, parent: nn.Module) -> nn.Module:
        """Return a copy of ``parent`` whose moving parameters require gradients."""
        return copy.deepcopy(parent)

    def named_moving(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """Return the moving parameters of a prepared model, in flattening order."""
        return [(name, p) for name, p in model.named_parameters() if p.requires_grad]

    def vector(self, model: nn.Module) -> torch.Tensor:
        """Return the moving parameters of a prepared model as one detached flat vector."""
        return torch.cat([p.detach().reshape(-1) for _, p in self.named_moving(model)]).clone()

    def layout(self, model: nn.Module) -> Layout:
        """Return ``(name, shape)`` of each moving tensor of a prepared model."""
        return [(name, tuple(p.shape)) for name, p in self.named_moving(model)]

    def full_parameters(self, prepared: nn.Module, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return all parameters of the original parent, with the moving ones taken from ``vector``.

        The names are those of the parent's ``named_parameters``, so the result can
        be passed to ``functional_call(parent, ...)``. Works inside ``vmap``.
        """
        params = {name: p.detach() for name, p in prepared.named_parameters()}
        params.update(unflatten(vector, self.layout(prepared)))
        return params


class AllParameters(ParameterSpace):
    """Every weight and bias moves (the published method)."""


class SelectedParameters(ParameterSpace):
    """Only the named parameter tensors move; the rest stay at the parent's values.

    Parameters
    ----------
    names : sequence of str, optional
        Parameter names as in ``named_parameters()``, for example ``layers.4.weight``.
    biases_only : bool
        Move every tensor whose name ends in ``bias``.
    last_layers : int, optional
        Move the tensors of the last ``n`` modules that own parameters.
    """

    def __init__(self, names: Sequence[str] | None = None, biases_only: bool = False, last_layers: int | None = None) -> None:
        if sum(x is not None and x is not False for x in (names, biases_only or None, last_layers)) != 1:
            raise ValueError("SelectedParameters needs exactly one of names, biases_only=True or last_layers.")
        if last_layers is not None and last_layers < 1:
            raise ValueError(f"last_layers must be at least 1, got {last_layers!r}.")
        self.names = list(names) if names is not None else None
        self.biases_only = biases_only
        self.last_layers = last_layers

    def _selected(self, parent: nn.Module) -> list[str]:
        all_names = [name for name, _ in parent.named_parameters()]
        if self.names is not None:
            unknown = sorted(set(self.names) - set(all_names))
            if unknown:
                raise ValueError(f"Parameters {unknown} not found; the network has {all_names}.")
            return self.names
        if self.biases_only:
            return [n for n in all_names if n.endswith("bias")]
        owners = [name for name, module in parent.named_modules() if any(True for _ in module.parameters(recurse=False))]
        if self.last_layers > len(owners):
            raise ValueError(f"last_layers={self.last_layers} exceeds the {len(owners)} layers with parameters.")
        keep = owners[-self.last_layers :]
        return [n for n in all_names if n.rsplit(".", 1)[0] in keep]

    def prepare(self, parent: nn.Module) -> nn.Module:
        model = copy.deepcopy(parent)
        selected = set(self._selected(parent))
        if not selected:
            raise ValueError("The parameter selection is empty; the network has no such parameters.")
        for name, p in model.named_parameters():
            p.requires_grad_(name in selected)
        return model


class _LowRankDelta(nn.Module):
    # W -> W + B @ A, with B zero at the start so the prepared copy equals the parent.
    def __init__(self, shape: tuple[int, int], rank: int, generator: torch.Generator) -> None:
        super().__init__()
        n_out, n_in = shape
        self.A = nn.Parameter(torch.randn(rank, n_in, generator=generator) / n_in**0.5)
        self.B = nn.Parameter(torch.zeros(n_out, rank))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.B @ self.A


class LowRankAdapters(ParameterSpace):
    """Low-rank adapters per linear layer (LoRA): ``W = W0 + B A`` with rank ``rank``.

    Only ``A`` and ``B`` are fine-tuned, and anomalies live in that adapter space,
    which for a linear layer of shape (n_out, n_in) has ``rank * (n_in + n_out)``
    numbers instead of ``n_in * n_out``. Biases and other parameters stay at the
    parent's values. Every subset starts from the same seeded ``A`` and ``B = 0``,
    so anomalies of different subsets share one origin.

    Reference: Hu et al. (2021), LoRA: Low-Rank Adaptation of Large Language Models.
    """

    def __init__(self, rank: int = 2, seed: int = 0) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank!r}.")
        self.rank = rank
        self.seed = seed

    def prepare(self, parent: nn.Module) -> nn.Module:
        model = copy.deepcopy(parent)
        generator = torch.Generator().manual_seed(self.seed)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError(f"LoRA adapters need nn.Linear layers; {type(parent).__name__} has none.")
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in linears:
            delta = _LowRankDelta(tuple(layer.weight.shape), min(self.rank, *layer.weight.shape), generator)
            parametrize.register_parametrization(layer, "weight", delta)
        return model

    def full_parameters(self, prepared: nn.Module, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        adapters = unflatten(vector, self.layout(prepared))
        params = {}
        for name, p in prepared.named_parameters():
            if ".parametrizations.weight." in name:
                continue
            params[name] = p.detach()
        for name, module in prepared.named_modules():
            if isinstance(module, nn.Linear) and parametrize.is_parametrized(module, "weight"):
                prefix = f"{name}.parametrizations.weight"
                original = getattr(module.parametrizations.weight, "original").detach()
                A, B = adapters[f"{prefix}.0.A"], adapters[f"{prefix}.0.B"]
                # (..., n_out, rank) @ (..., rank, n_in) -> (..., n_out, n_in)
                params[f"{name}.weight"] = original + B @ A
        return params


def make_space(which: str = "all", n_layers: int = 1, rank: int = 2, seed: int = 0) -> ParameterSpace:
    """Build a parameter space by name: ``all``, ``biases``, ``last_layers`` or ``lora``."""
    if which == "all":
        return AllParameters()
    if which == "biases":
        return SelectedParameters(biases_only=True)
    if which == "last_layers":
        return SelectedParameters(last_layers=n_layers)
    if which == "lora":
        return LowRankAdapters(rank=rank, seed=seed)
    raise ValueError(f"Unknown parameter space {which!r}; choose one of all, biases, last_layers, lora.")
