"""A multilayer perceptron emulator."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "ACTIVATIONS"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
}


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
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        width: int = 64,
        depth: int = 2,
        activation: str = "tanh",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
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
        }

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            layers: list[nn.Module] = []
            size = int(n_inputs)
            for _ in range(int(depth)):
                layers += [nn.Linear(size, int(width)), ACTIVATIONS[activation]()]
                size = int(width)
            layers.append(nn.Linear(size, int(n_outputs)))
            self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, n_inputs) -> (batch, n_outputs)
        return self.layers(x)
