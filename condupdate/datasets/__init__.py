"""Loaders for the bundled sample data and generators of synthetic benchmark problems."""

from condupdate.datasets.synthetic import LinearWeightsProblem, linear_weights_problem

__all__ = ["LinearWeightsProblem", "linear_weights_problem"]
