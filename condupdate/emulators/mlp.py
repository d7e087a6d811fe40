"""A multilayer perceptron emulator with a mean head or a Gaussian (mean and standard deviation) head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

__all__ = ["MLP", "ACTIVATIONS", "HEADS", "MIN_STD", "gaussian_parts"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
}

# "mean": one output per target. "gaussian": a mean and a standard deviation per
# target, trained with the Gaussian negative log-likelihood.
HEADS = ("mean", "gaussian")

# Smallest standard deviation of the Gaussian head, in standardised target units.
# It keeps the log-likelihood finite when a target is fitted exactly.
MIN_STD = 1e-3


class MLP(nn.Module):
    """Fully connected network: ``depth`` hidden layers of ``width`` units and a linear output.

    Parameters
    ----------
    n_inputs, n_outputs : int
        Numbers of input features and target variables.
    width : int, default 64
        Units per hidden layer.
    depth : int, default 2
        Number of hidden layers; 0 gives a linear model.
    activation : str, default "tanh"
        One of ``ACTIVATIONS``.
    seed : int, optional
        Seeds the weight initialisation without touching torch's global generator.
    head : {"mean", "gaussian"}, default "mean"
        ``"mean"`` outputs ``(batch, n_outputs)`` predictions. ``"gaussian"``
        outputs ``(batch, 2 * n_outputs)``: the means of the ``n_outputs`` targets,
        then their standard deviations ``softplus(z) + MIN_STD``, all in the units
        of the (standardised) targets. :func:`gaussian_parts` splits the two.

    Examples
    --------
    >>> import torch
    >>> net = MLP(3, 2, width=8, head="gaussian", seed=0)
    >>> mean, std = gaussian_parts(net(torch.zeros(5, 3)), 2)
    >>> tuple(mean.shape), bool((std > 0).all())
    ((5, 2), True)
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        seed: int | None = None,
        head: str = "mean",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
        if head not in HEADS:
            raise ValueError(f"Unknown MLP head {head!r}; choose one of {list(HEADS)}.")
        for name, value in (("n_inputs", n_inputs), ("n_outputs", n_outputs), ("width", width)):
            if int(value) < 1:
                raise ValueError(f"MLP {name} must be a positive integer, got {value!r}.")
        if int(depth) < 0:
            raise ValueError(f"MLP depth must be 0 or more hidden layers, got {depth!r}.")
        self.config = {
            "n_inputs": int(n_inputs),
            "n_outputs": int(n_outputs),
            "width": int(width),
            "depth": int(depth),
            "activation": activation,
            "head": head,
        }
        self.head = head
        self.n_targets = int(n_outputs)

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            layers: list[nn.Module] = []
            size = int(n_inputs)
            for _ in range(int(depth)):
                layers += [nn.Linear(size, int(width)), ACTIVATIONS[activation]()]
                size = int(width)
            n_last = int(n_outputs) * (2 if head == "gaussian" else 1)
            layers.append(nn.Linear(size, n_last))
            self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, n_inputs) -> (batch, n_outputs), or (batch, 2 * n_outputs) for the Gaussian head
        out = self.layers(x)
        if self.head == "mean":
            return out
        mean, raw = out[..., : self.n_targets], out[..., self.n_targets :]
        # softplus grows linearly rather than exponentially, so a child evaluated
        # far from its training inputs gets a large but finite spread.
        return torch.cat([mean, functional.softplus(raw) + MIN_STD], dim=-1)


def gaussian_parts(output: torch.Tensor, n_targets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a Gaussian head's ``(..., 2 * n_targets)`` output into means and standard deviations.

    Works on numpy arrays too, since it only slices the last axis.
    """
    if output.shape[-1] != 2 * n_targets:
        raise ValueError(
            f"A Gaussian head output for {n_targets} targets has {2 * n_targets} columns, got shape {tuple(output.shape)}."
        )
    return output[..., :n_targets], output[..., n_targets:]
