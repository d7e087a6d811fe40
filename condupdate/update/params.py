"""Flatten a module's parameters to one vector and back, with names and shapes."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

__all__ = ["parameter_vector", "parameter_layout", "parameter_labels", "with_parameters", "unflatten"]


def parameter_vector(module: nn.Module) -> torch.Tensor:
    """Return all parameters of ``module`` concatenated in ``named_parameters`` order, detached."""
    return torch.nn.utils.parameters_to_vector(module.parameters()).detach().clone()


def parameter_layout(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Return ``(name, shape)`` of each parameter tensor, in the flattening order."""
    return [(name, tuple(p.shape)) for name, p in module.named_parameters()]


def parameter_labels(layout: list[tuple[str, tuple[int, ...]]]) -> np.ndarray:
    """Name of the tensor that owns each element of the flat vector, for example ``layers.0.weight``."""
    return np.concatenate([np.full(int(np.prod(shape)), name) for name, shape in layout]).astype(str)


def unflatten(vector: torch.Tensor, layout: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """Split a flat vector (``(..., n_parameters)``) into named tensors of the layout's shapes."""
    out, start = {}, 0
    lead = vector.shape[:-1]
    for name, shape in layout:
        size = int(np.prod(shape))
        out[name] = vector[..., start : start + size].reshape(*lead, *shape)
        start += size
    if start != vector.shape[-1]:
        raise ValueError(f"Vector has {vector.shape[-1]} elements but the layout needs {start}.")
    return out


def with_parameters(module: nn.Module, vector: torch.Tensor) -> nn.Module:
    """Return a copy of ``module`` whose parameters are set from a flat ``vector``."""
    out = copy.deepcopy(module)
    expected = sum(p.numel() for p in out.parameters())
    if vector.numel() != expected:
        raise ValueError(f"Parameter vector has {vector.numel()} elements; the module has {expected}.")
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(vector.to(next(out.parameters()).dtype), out.parameters())
    out.eval()
    return out
