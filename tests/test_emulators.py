"""Tests of condupdate.emulators: the MLP, the masked loss and the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from condupdate.emulators import MLP, TrainConfig, masked_mse, train


def _regression_data(n_samples: int, seed: int, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Return seeded standardised inputs (n_samples, 3) and targets (n_samples, 2)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, 3)).astype(np.float32)
    weights = np.array([[1.0, -0.5], [0.3, 0.8], [-1.2, 0.1]], dtype=np.float32)
    y = X @ weights + noise * rng.standard_normal((n_samples, 2)).astype(np.float32)
    return X, y


def _trained_mlp(model_seed: int, train_seed: int) -> MLP:
    """Return a small tanh MLP trained for a few epochs on the seeded regression data."""
    X, y = _regression_data(80, seed=0)
    model = MLP(3, 2, width=8, depth=2, seed=model_seed)
    config = TrainConfig(epochs=5, batch_size=16, learning_rate=1e-2, patience=0, seed=train_seed)
    train(model, X, y, config)
    return model


def _validation_rows(n_samples: int, config: TrainConfig) -> np.ndarray:
    """Return the rows that ``train`` holds out for validation.

    NOTE: this mirrors the split inside ``train`` (a permutation drawn from
    ``np.random.default_rng(config.seed)``, its first ``round(fraction * n)`` rows
    held out) and must change if that split changes.
    """
    order = np.random.default_rng(config.seed).permutation(n_samples)
    return order[: int(round(config.validation_fraction * n_samples))]


# MLP ------------------------------------------------------------------------


def test_mlp_depth_zero_is_linear():
    model = MLP(4, 2, depth=0, seed=0)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    expected = x @ model.layers[0].weight.T + model.layers[0].bias

    assert len(model.layers) == 1
    assert torch.allclose(model(x), expected)


def test_mlp_output_shape():
    model = MLP(3, 5, width=7, depth=3, activation="relu", seed=0)

    output = model(torch.zeros(11, 3))

    assert output.shape == (11, 5)


def test_mlp_seed_leaves_global_generator():
    torch.manual_seed(123)
    state = torch.get_rng_state()

    MLP(3, 2, seed=7)

    assert torch.equal(torch.get_rng_state(), state)


def test_mlp_rejects_unknown_activation():
    with pytest.raises(ValueError, match="Unknown activation 'softplus'"):
        MLP(3, 1, activation="softplus")


def test_mlp_rejects_negative_depth():
    with pytest.raises(ValueError, match="depth must be 0 or more"):
        MLP(3, 1, depth=-1)


# Reproducibility --------------------------------------------------------------


def test_training_same_seed_bit_identical():
    first = _trained_mlp(model_seed=3, train_seed=4)
    second = _trained_mlp(model_seed=3, train_seed=4)

    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_training_other_init_seed_differs():
    first = _trained_mlp(model_seed=3, train_seed=4)
    second = _trained_mlp(model_seed=5, train_seed=4)

    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert not torch.equal(a, b), name


def test_training_other_batch_seed_differs():
    first = _trained_mlp(model_seed=3, train_seed=4)
    second = _trained_mlp(model_seed=3, train_seed=9)

    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert not torch.equal(a, b), name


# masked_mse -------------------------------------------------------------------


def test_masked_mse_matches_finite_cells():
    prediction = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]])
    target = torch.tensor([[0.0, float("nan")], [2.0, 1.0], [float("nan"), float("nan")]])
    # Finite cells: (1 - 0), (3 - 2), (-1 - 1) -> (1 + 1 + 4) / 3.
    expected = torch.tensor(6.0 / 3.0)

    loss = masked_mse(prediction, target)

    assert torch.allclose(loss, expected, rtol=0, atol=1e-7)


def test_masked_mse_nan_cells_get_zero_gradient():
    prediction = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [2.0, 1.0], [float("nan"), float("nan")]])
    finite = torch.isfinite(target)
    # d/dp of sum((p - t)^2) / n_finite is 2 (p - t) / n_finite on finite cells.
    expected = torch.where(finite, 2.0 * (prediction.detach() - torch.nan_to_num(target)) / 3.0, 0.0)

    masked_mse(prediction, target).backward()

    assert torch.all(prediction.grad[~finite] == 0)
    assert torch.allclose(prediction.grad, expected, rtol=0, atol=1e-7)


def test_masked_mse_all_nan_is_zero():
    prediction = torch.ones(2, 3, requires_grad=True)
    target = torch.full((2, 3), float("nan"))

    loss = masked_mse(prediction, target)
    loss.backward()

    assert loss.item() == 0.0
    assert torch.all(prediction.grad == 0)


def test_training_with_nan_targets_stays_finite():
    X, y = _regression_data(60, seed=1)
    rng = np.random.default_rng(2)
    y[rng.random(y.shape) < 0.3] = np.nan
    model = MLP(3, 2, width=8, depth=1, seed=0)

    history = train(model, X, y, TrainConfig(epochs=10, batch_size=8, learning_rate=1e-2, seed=0))

    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
    assert np.isfinite(history.train_loss).all()
    assert np.isfinite(history.val_loss).all()


# Early stopping ------------------------------------------------------------------


def test_early_stopping_halts_before_epochs():
    # Noisy targets and a wide network overfit 45 training samples within a few epochs.
    X, y = _regression_data(60, seed=0, noise=0.5)
    config = TrainConfig(epochs=300, batch_size=16, learning_rate=1e-2, validation_fraction=0.25, patience=5, seed=0)
    model = MLP(3, 2, width=32, depth=2, seed=0)

    history = train(model, X, y, config)

    assert len(history.val_loss) < config.epochs
    assert len(history.val_loss) == history.best_epoch + config.patience + 1
    assert history.val_loss[history.best_epoch] == min(history.val_loss)


def test_early_stopping_restores_best_weights():
    X, y = _regression_data(60, seed=0, noise=0.5)
    config = TrainConfig(epochs=300, batch_size=16, learning_rate=1e-2, validation_fraction=0.25, patience=5, seed=0)
    model = MLP(3, 2, width=32, depth=2, seed=0)
    history = train(model, X, y, config)
    rows = _validation_rows(len(X), config)

    with torch.no_grad():
        restored = masked_mse(model(torch.as_tensor(X[rows])), torch.as_tensor(y[rows])).item()

    assert restored == pytest.approx(min(history.val_loss), rel=1e-5)


def test_early_stopping_weights_match_shorter_run():
    # A run cut at the best epoch ends on that epoch's weights, so the longer
    # run must restore exactly those.
    X, y = _regression_data(60, seed=0, noise=0.5)
    config = TrainConfig(epochs=300, batch_size=16, learning_rate=1e-2, validation_fraction=0.25, patience=5, seed=0)
    long_run = MLP(3, 2, width=32, depth=2, seed=0)
    history = train(long_run, X, y, config)
    short_run = MLP(3, 2, width=32, depth=2, seed=0)

    train(short_run, X, y, config.replace(epochs=history.best_epoch + 1, patience=0))

    for (name, a), (_, b) in zip(long_run.named_parameters(), short_run.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_training_without_patience_runs_all_epochs():
    X, y = _regression_data(60, seed=0, noise=0.5)
    config = TrainConfig(epochs=12, batch_size=16, learning_rate=1e-2, validation_fraction=0.25, patience=0, seed=0)

    history = train(MLP(3, 2, width=32, depth=2, seed=0), X, y, config)

    assert len(history.train_loss) == config.epochs
    assert len(history.val_loss) == config.epochs


# Input checks -------------------------------------------------------------------


def test_training_rejects_nan_inputs():
    X, y = _regression_data(20, seed=0)
    X[3, 1] = np.nan
    model = MLP(3, 2, depth=0, seed=0)

    with pytest.raises(ValueError, match="X contains NaN"):
        train(model, X, y, TrainConfig(epochs=1))


def test_training_rejects_mismatched_lengths():
    X, y = _regression_data(20, seed=0)
    model = MLP(3, 2, depth=0, seed=0)

    with pytest.raises(ValueError, match=r"got \(20, 3\) and \(19, 2\)"):
        train(model, X, y[:19], TrainConfig(epochs=1))


@pytest.mark.parametrize(
    ("option", "value"),
    [("epochs", 0), ("batch_size", 0), ("learning_rate", 0.0), ("validation_fraction", 1.0), ("patience", -1)],
)
def test_train_config_rejects_invalid_option(option, value):
    with pytest.raises(ValueError, match=f"Invalid training option {option}="):
        TrainConfig(**{option: value})
