"""Torch emulators and the training loop. Any ``torch.nn.Module`` mapping (batch, inputs) to (batch, outputs) works."""

from condupdate.emulators.mlp import ACTIVATIONS, MLP
from condupdate.emulators.training import TrainConfig, TrainHistory, masked_mse, train

__all__ = ["ACTIVATIONS", "MLP", "TrainConfig", "TrainHistory", "masked_mse", "train"]
