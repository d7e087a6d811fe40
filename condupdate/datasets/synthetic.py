"""Synthetic problems with a known answer, for tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LinearWeightsProblem", "linear_weights_problem"]


@dataclass
class LinearWeightsProblem:
    """Samples of ``y = w(p) . x`` whose true weights depend linearly on the predictor ``p``.

    ``w(p) = intercept + slope * p``; ``subsets`` lists ``(label, X, y)`` per
    training predictor value, and ``predictors`` the matching ``p``.
    """

    intercept: np.ndarray  # (n_inputs,)
    slope: np.ndarray  # (n_inputs,)
    subsets: list[tuple[str, np.ndarray, np.ndarray]]
    predictors: np.ndarray  # (n_subsets, 1)

    def weights(self, p: float) -> np.ndarray:
        """Return the true weights ``w(p)`` of shape ``(n_inputs,)``."""
        return self.intercept + self.slope * p

    def sample(self, p: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` noise-free samples ``(X, y)`` at predictor ``p``."""
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, len(self.intercept))).astype(np.float32)
        return X, (X @ self.weights(p))[:, None].astype(np.float32)


def linear_weights_problem(
    n_inputs: int = 3,
    n_subsets: int = 6,
    samples_per_subset: int = 400,
    predictor_range: tuple[float, float] = (0.0, 1.0),
    noise: float = 0.0,
    seed: int = 0,
) -> LinearWeightsProblem:
    """Build a :class:`LinearWeightsProblem` with subsets at evenly spaced predictors.

    Parameters
    ----------
    n_inputs : int
        Number of input features.
    n_subsets : int
        Number of training subsets, one predictor value each.
    samples_per_subset : int
        Samples drawn per subset.
    predictor_range : (float, float)
        Smallest and largest training predictor.
    noise : float
        Standard deviation of Gaussian noise added to ``y``.
    seed : int
        Seeds the true weights, the inputs and the noise.
    """
    rng = np.random.default_rng(seed)
    intercept = rng.uniform(0.5, 1.5, n_inputs) * rng.choice([-1, 1], n_inputs)
    slope = rng.uniform(0.5, 1.0, n_inputs) * rng.choice([-1, 1], n_inputs)
    predictors = np.linspace(*predictor_range, n_subsets)[:, None]
    problem = LinearWeightsProblem(intercept, slope, [], predictors)
    for k, p in enumerate(predictors[:, 0]):
        X, y = problem.sample(p, samples_per_subset, seed=seed * 1000 + k + 1)
        y = y + noise * rng.standard_normal(y.shape).astype(np.float32)
        problem.subsets.append((f"p={p:g}", X, y))
    return problem
