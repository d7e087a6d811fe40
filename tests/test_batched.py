"""Tests of condupdate.update.batched: batched fine-tuning against the sequential train() loop."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

from condupdate.emulators import MLP, TrainConfig, TrainHistory, train
from condupdate.update.batched import MemoryBudgetWarning, _StackedAdam, estimate_member_bytes, finetune_batched
from condupdate.update.spaces import AllParameters, LowRankAdapters, SelectedParameters

N_INPUTS, N_OUTPUTS = 3, 2


def _subsets(sizes: list[int], seed: int = 0, nan_fraction: float = 0.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return seeded subsets of standardised inputs (n, 3) and targets (n, 2), one per size.

    The targets are a linear map of the inputs plus noise, shifted a little from
    subset to subset, and a fraction of target cells is NaN.
    """
    rng = np.random.default_rng(seed)
    weights = np.array([[1.0, -0.5], [0.3, 0.8], [-1.2, 0.1]])
    subsets = []
    for k, n in enumerate(sizes):
        X = rng.standard_normal((n, N_INPUTS))
        y = X @ weights + 0.2 * k + 0.3 * rng.standard_normal((n, N_OUTPUTS))
        y[rng.random(y.shape) < nan_fraction] = np.nan
        subsets.append((X.astype(np.float32), y.astype(np.float32)))
    return subsets


def _sequential(
    parent: nn.Module, subsets: list, config: TrainConfig, seeds: list[int]
) -> tuple[torch.Tensor, list[TrainHistory]]:
    """Fine-tune a deep copy of the parent per subset with train(); return anomalies and histories."""
    space = AllParameters()
    theta0 = space.vector(parent)
    rows, histories = [], []
    for (X, y), seed in zip(subsets, seeds):
        model = copy.deepcopy(parent)
        histories.append(train(model, X, y, config.replace(seed=seed)))
        rows.append(space.vector(model) - theta0)
    return torch.stack(rows), histories


def _assert_members_agree(batched: np.ndarray, sequential: torch.Tensor) -> None:
    assert batched.shape == tuple(sequential.shape)
    for k in range(len(batched)):
        member = torch.from_numpy(batched[k])
        assert torch.allclose(member, sequential[k], rtol=1e-5, atol=1e-7), (
            f"member {k}: max difference {(member - sequential[k]).abs().max():.3g}"
        )


class _ResidualNet(nn.Module):
    """A network that is not an MLP: a residual block, a frozen scale and a parameter the forward pass never uses."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.inner = nn.Linear(N_INPUTS, N_INPUTS)
        self.head = nn.Linear(N_INPUTS, N_OUTPUTS)
        self.scale = nn.Parameter(torch.rand(N_INPUTS, generator=generator) + 0.5, requires_grad=False)
        self.unused = nn.Parameter(torch.randn(4, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + torch.sin(self.inner(x)) * self.scale)


# The stacked optimiser ----------------------------------------------------------


def test_stacked_adam_matches_torch_adam_bitwise():
    generator = torch.Generator().manual_seed(0)
    theta0 = torch.randn(4, 50, generator=generator)
    # Members take different numbers of steps, so their bias corrections differ.
    steps_per_member = [5, 2, 7, 1]
    grads = torch.randn(7, 4, 50, generator=generator) * 10.0 ** torch.randint(-6, 1, (7, 4, 50), generator=generator)

    expected = []
    for k, n_steps in enumerate(steps_per_member):
        param = nn.Parameter(theta0[k].clone())
        optimizer = torch.optim.Adam([param], lr=3e-3, weight_decay=0.01)
        for step in range(n_steps):
            param.grad = grads[step, k].clone()
            optimizer.step()
        expected.append(param.detach())

    theta = theta0.clone()
    adam = _StackedAdam(theta, learning_rate=3e-3, weight_decay=0.01)
    for step in range(max(steps_per_member)):
        active = [k for k, n_steps in enumerate(steps_per_member) if step < n_steps]
        adam.step(theta, grads[step, active].clone(), active)

    assert torch.equal(theta, torch.stack(expected))


# Agreement with the sequential loop ----------------------------------------------

CASES = {
    # name: (subset sizes, validation fraction, patience, NaN fraction, weight decay, epochs)
    "one member": ([50], 0.0, 0, 0.0, 0.0, 4),
    "unequal sizes with validation": ([23, 57, 120, 9, 64], 0.2, 0, 0.0, 0.0, 6),
    "nan targets and weight decay": ([40, 90, 31, 75], 0.2, 0, 0.15, 0.01, 6),
    "early stopping on validation loss": ([20, 35, 60, 14, 90, 44, 27], 0.3, 2, 0.1, 0.0, 15),
    "early stopping on training loss": ([12, 30, 66, 18, 45], 0.0, 1, 0.1, 0.0, 15),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_matches_sequential(case):
    sizes, validation_fraction, patience, nan_fraction, weight_decay, epochs = CASES[case]
    parent = MLP(N_INPUTS, N_OUTPUTS, width=12, depth=2, seed=1)
    subsets = _subsets(sizes, seed=len(sizes), nan_fraction=nan_fraction)
    config = TrainConfig(
        epochs=epochs,
        batch_size=16,
        learning_rate=0.03,
        weight_decay=weight_decay,
        validation_fraction=validation_fraction,
        patience=patience,
    )
    seeds = [10 + k for k in range(len(sizes))]

    anomalies, histories = finetune_batched(parent, subsets, config, seeds=seeds)
    expected, expected_histories = _sequential(parent, subsets, config, seeds)

    _assert_members_agree(anomalies, expected)
    assert [h.best_epoch for h in histories] == [h.best_epoch for h in expected_histories]
    assert [len(h.val_loss) for h in histories] == [len(h.val_loss) for h in expected_histories]
    for history, reference in zip(histories, expected_histories):
        np.testing.assert_allclose(history.train_loss, reference.train_loss, rtol=1e-5)
        np.testing.assert_allclose(history.val_loss, reference.val_loss, rtol=1e-5)


@pytest.mark.parametrize("case", ["early stopping on validation loss", "early stopping on training loss"])
def test_early_stopping_cases_stop_some_members(case):
    # Guards the cases above: they only test early stopping while it triggers.
    sizes, validation_fraction, patience, nan_fraction, _, epochs = CASES[case]
    config = TrainConfig(
        epochs=epochs, batch_size=16, learning_rate=0.03, validation_fraction=validation_fraction, patience=patience
    )
    parent = MLP(N_INPUTS, N_OUTPUTS, width=12, depth=2, seed=1)
    subsets = _subsets(sizes, seed=len(sizes), nan_fraction=nan_fraction)

    _, histories = finetune_batched(parent, subsets, config, seeds=[10 + k for k in range(len(sizes))])

    epochs_run = [len(h.val_loss) for h in histories]
    assert min(epochs_run) < epochs
    assert len(set(epochs_run)) > 1


def test_non_mlp_module_matches_sequential():
    parent = _ResidualNet()
    subsets = _subsets([30, 70, 45], seed=5, nan_fraction=0.1)
    config = TrainConfig(
        epochs=5, batch_size=16, learning_rate=0.02, weight_decay=0.01, validation_fraction=0.2, patience=2
    )

    anomalies, _ = finetune_batched(parent, subsets, config, seeds=[0, 1, 2])
    expected, _ = _sequential(parent, subsets, config, [0, 1, 2])

    _assert_members_agree(anomalies, expected)
    # The frozen scale is not in the vector, and the unused parameter never moves.
    layout = AllParameters().layout(parent)
    labels = np.concatenate([np.full(int(np.prod(shape)), name) for name, shape in layout])
    assert anomalies.shape[1] == labels.size
    assert "scale" not in labels
    assert np.all(anomalies[:, labels == "unused"] == 0)
    assert np.all(anomalies[:, labels != "unused"].any(axis=0))


def test_default_seeds_use_config_seed():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    subsets = _subsets([25, 40], seed=2)
    config = TrainConfig(epochs=3, batch_size=8, learning_rate=0.01, seed=7)

    default, _ = finetune_batched(parent, subsets, config)
    explicit, _ = finetune_batched(parent, subsets, config, seeds=[7, 7])

    assert np.array_equal(default, explicit)


def test_parent_is_not_modified():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    before = copy.deepcopy(parent.state_dict())

    finetune_batched(parent, _subsets([25, 40], seed=2), TrainConfig(epochs=2, batch_size=8, learning_rate=0.05))

    for name, tensor in parent.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(p.requires_grad for p in parent.parameters())


# Chunks and the memory budget ---------------------------------------------------


def test_chunk_sizes_give_identical_results():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=12, depth=2, seed=1)
    subsets = _subsets([23, 57, 120, 9, 64, 31, 88], seed=4, nan_fraction=0.1)
    config = TrainConfig(epochs=6, batch_size=16, learning_rate=0.03, validation_fraction=0.2, patience=2)
    seeds = list(range(len(subsets)))

    reference, reference_histories = finetune_batched(parent, subsets, config, seeds=seeds, chunk_size=len(subsets))
    for chunk_size in (1, 3):
        anomalies, histories = finetune_batched(parent, subsets, config, seeds=seeds, chunk_size=chunk_size)
        assert np.array_equal(anomalies, reference), f"chunk_size={chunk_size}"
        assert histories == reference_histories, f"chunk_size={chunk_size}"


def test_memory_budget_sets_chunk_size(caplog):
    parent = MLP(N_INPUTS, N_OUTPUTS, width=12, depth=2, seed=1)
    subsets = _subsets([40, 60, 50, 30, 70], seed=6)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.01)
    member_bytes = estimate_member_bytes(parent, subsets, config)

    with caplog.at_level(logging.INFO, logger="condupdate.update.batched"):
        anomalies, _ = finetune_batched(parent, subsets, config, memory_budget_bytes=int(2.5 * member_bytes))
    chunks = [r.getMessage() for r in caplog.records if "batched fine-tuning, members" in r.getMessage()]
    unchunked, _ = finetune_batched(parent, subsets, config, chunk_size=len(subsets))

    assert chunks == [
        "batched fine-tuning, members 1-2 of 5",
        "batched fine-tuning, members 3-4 of 5",
        "batched fine-tuning, members 5-5 of 5",
    ]
    assert np.array_equal(anomalies, unchunked)


def test_budget_below_one_member_warns():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    subsets = _subsets([20, 30], seed=1)
    config = TrainConfig(epochs=1, batch_size=8)

    with pytest.warns(MemoryBudgetWarning, match="more than the memory budget"):
        finetune_batched(parent, subsets, config, memory_budget_bytes=1)


def test_member_bytes_cover_parameters_and_batch():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=32, depth=2, seed=0)
    subsets = _subsets([200, 100], seed=1)
    n_parameters = sum(p.numel() for p in parent.parameters())

    small_batch = estimate_member_bytes(parent, subsets, TrainConfig(batch_size=8))
    large_batch = estimate_member_bytes(parent, subsets, TrainConfig(batch_size=128))

    # Twelve float32 copies of the parameters, plus activations and samples.
    assert small_batch > 12 * 4 * n_parameters
    # At least the two hidden (batch, 32) float32 activations grow with the batch.
    assert large_batch - small_batch >= (128 - 8) * 2 * 32 * 4


# Invalid input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "space", [SelectedParameters(biases_only=True), LowRankAdapters(rank=1)], ids=["selected", "lora"]
)
def test_other_spaces_raise_not_implemented(space):
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    subsets = _subsets([20], seed=0)
    config = TrainConfig(epochs=1)

    with pytest.raises(NotImplementedError, match="supports only space=AllParameters"):
        finetune_batched(parent, subsets, config, space=space)


def test_dropout_raises_not_implemented():
    parent = nn.Sequential(nn.Linear(N_INPUTS, 8), nn.Dropout(0.1), nn.Linear(8, N_OUTPUTS))
    subsets = _subsets([20], seed=0)
    config = TrainConfig(epochs=1)

    with pytest.raises(NotImplementedError, match="dropout masks"):
        finetune_batched(parent, subsets, config)


def test_batch_norm_raises_not_implemented():
    parent = nn.Sequential(nn.Linear(N_INPUTS, 8), nn.BatchNorm1d(8), nn.Linear(8, N_OUTPUTS))
    subsets = _subsets([20], seed=0)
    config = TrainConfig(epochs=1)

    with pytest.raises(NotImplementedError, match="running statistics"):
        finetune_batched(parent, subsets, config)


def test_seed_count_mismatch_raises():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    subsets = _subsets([20, 30], seed=0)
    config = TrainConfig(epochs=1)

    with pytest.raises(ValueError, match="Got 3 seeds for 2 subsets"):
        finetune_batched(parent, subsets, config, seeds=[0, 1, 2])


def test_nan_inputs_raise():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    (X, y), second = _subsets([20, 30], seed=0)
    X[3, 1] = np.nan
    config = TrainConfig(epochs=1)

    with pytest.raises(ValueError, match="Subset 0: X contains NaN"):
        finetune_batched(parent, [(X, y), second], config)


def test_mismatched_inputs_raise():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    first, (X, y) = _subsets([20, 30], seed=0)
    config = TrainConfig(epochs=1)

    with pytest.raises(ValueError, match="Subset 1 has 2 inputs"):
        finetune_batched(parent, [first, (X[:, :2], y)], config)


def test_empty_subsets_raise():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    config = TrainConfig(epochs=1)

    with pytest.raises(ValueError, match="subsets is empty"):
        finetune_batched(parent, [], config)


def test_zero_chunk_size_raises():
    parent = MLP(N_INPUTS, N_OUTPUTS, width=8, depth=1, seed=0)
    subsets = _subsets([20], seed=0)
    config = TrainConfig(epochs=1)

    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        finetune_batched(parent, subsets, config, chunk_size=0)


def test_run_batched_engine_matches_sequential(run_config, temperature_file):
    from condupdate.jobs.config import parse_config
    from condupdate.jobs.run import run

    results = {}
    for engine in ("sequential", "batched"):
        raw = run_config([temperature_file])
        raw["update"] = {"members": 2, "engine": engine}
        results[engine] = run(parse_config(raw)).update.anomalies_

    assert results["batched"].dims == ("member", "subset", "parameter")
    np.testing.assert_allclose(results["batched"].values, results["sequential"].values, rtol=1e-4, atol=1e-6)
