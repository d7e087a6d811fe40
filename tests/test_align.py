"""Tests for hidden-unit alignment: permutation matching and sign canonicalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from torch import nn

from condupdate.emulators import MLP
from condupdate.update.align import align_to, canonicalize_signs, flip_hidden_units, permute_hidden_units
from condupdate.update.params import parameter_vector

METHODS = ["weights", "activations"]


def _hidden_sizes(model: nn.Module) -> list[int]:
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return [linear.out_features for linear in linears[:-1]]


def _random_symmetry(model: nn.Module, seed: int, signs: bool = True) -> nn.Module:
    """Apply a random permutation, and optionally random sign flips, to every hidden layer."""
    rng = np.random.default_rng(seed)
    sizes = _hidden_sizes(model)
    shuffled = permute_hidden_units(model, [rng.permutation(size) for size in sizes])
    if not signs:
        return shuffled
    return flip_hidden_units(shuffled, [rng.choice([-1, 1], size=size) for size in sizes])


def _uneven_tanh_network(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))


def _inputs(n_inputs: int, seed: int = 0, n_samples: int = 256) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(n_samples, n_inputs, generator=generator)


def _assert_same_parameters(result: nn.Module, expected: nn.Module) -> None:
    for (name, value), (_, target) in zip(result.named_parameters(), expected.named_parameters()):
        assert torch.equal(value, target), f"{name} differs by up to {(value - target).abs().max().item():.3g}"


# --- symmetric copies and exact recovery -------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3])
def test_symmetric_copy_keeps_function(depth: int) -> None:
    net = MLP(3, 2, width=6, depth=depth, seed=depth)
    copy = _random_symmetry(net, seed=10 + depth)
    x = _inputs(3)

    with torch.no_grad():
        assert torch.allclose(copy(x), net(x), atol=1e-5)
    assert not torch.equal(parameter_vector(copy), parameter_vector(net))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("depth", [2, 3])
def test_align_recovers_permuted_flipped_mlp(method: str, depth: int) -> None:
    net = MLP(3, 2, width=6, depth=depth, seed=depth)
    copy = _random_symmetry(net, seed=20 + depth)

    aligned = align_to(copy, net, method=method, probe=_inputs(3))

    _assert_same_parameters(aligned, net)


@pytest.mark.parametrize("method", METHODS)
def test_align_recovers_uneven_sequential(method: str) -> None:
    net = _uneven_tanh_network()
    copy = _random_symmetry(net, seed=3)

    aligned = align_to(copy, net, method=method, probe=_inputs(3))

    assert isinstance(aligned, nn.Sequential)
    _assert_same_parameters(aligned, net)


@pytest.mark.parametrize("method", METHODS)
def test_align_keeps_function_of_other_network(method: str) -> None:
    net = MLP(3, 2, width=6, depth=2, seed=0)
    other = MLP(3, 2, width=6, depth=2, seed=1)
    x = _inputs(3)

    aligned = align_to(other, net, method=method, probe=x)

    with torch.no_grad():
        assert torch.allclose(aligned(x), other(x), atol=1e-5)


def test_align_leaves_inputs_untouched() -> None:
    net = MLP(3, 2, width=6, depth=2, seed=0)
    copy = _random_symmetry(net, seed=5)
    before = parameter_vector(copy)

    align_to(copy, net)

    assert torch.equal(parameter_vector(copy), before)


def test_align_without_signs_cannot_undo_flips() -> None:
    net = MLP(3, 2, width=6, depth=2, seed=0)
    flipped = flip_hidden_units(net, [np.array([-1, 1, 1, 1, 1, 1]), np.ones(6)])

    aligned = align_to(flipped, net, signs=False)

    assert not torch.equal(parameter_vector(aligned), parameter_vector(net))
    with torch.no_grad():
        assert torch.allclose(aligned(_inputs(3)), net(_inputs(3)), atol=1e-5)


# --- sign canonicalisation ---------------------------------------------------------------


def test_canonicalize_keeps_function() -> None:
    net = MLP(3, 2, width=6, depth=3, seed=0)
    x = _inputs(3)

    canonical = canonicalize_signs(net)

    with torch.no_grad():
        assert torch.allclose(canonical(x), net(x), atol=1e-5)


def test_canonicalize_makes_biases_positive() -> None:
    canonical = canonicalize_signs(MLP(3, 2, width=6, depth=3, seed=0))

    for index in (0, 2, 4):
        assert (canonical.layers[index].bias > 0).all()


def test_canonicalize_is_idempotent() -> None:
    once = canonicalize_signs(MLP(3, 2, width=6, depth=3, seed=0))

    twice = canonicalize_signs(once)

    _assert_same_parameters(twice, once)


def test_canonicalize_maps_flipped_copy_to_original() -> None:
    net = MLP(3, 2, width=6, depth=3, seed=0)
    rng = np.random.default_rng(1)
    flipped = flip_hidden_units(net, [rng.choice([-1, 1], size=6) for _ in range(3)])

    _assert_same_parameters(canonicalize_signs(flipped), canonicalize_signs(net))


def test_canonicalize_uses_weight_sum_without_bias() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 1))
    flipped = flip_hidden_units(net, [np.array([-1, 1, -1, 1])])

    canonical = canonicalize_signs(flipped)

    assert (canonical[0].weight.sum(dim=1) > 0).all()
    _assert_same_parameters(canonical, canonicalize_signs(net))


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "elu", "sigmoid"])
def test_canonicalize_rejects_non_odd_activation(activation: str) -> None:
    net = MLP(3, 2, width=4, depth=2, activation=activation, seed=0)
    name = type(net.layers[1]).__name__

    with pytest.raises(ValueError, match=f"activation {name} is not an odd"):
        canonicalize_signs(net)


# --- ReLU networks: permutations only ----------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_align_recovers_permuted_relu_mlp(method: str) -> None:
    net = MLP(3, 2, width=6, depth=2, activation="relu", seed=0)
    copy = _random_symmetry(net, seed=7, signs=False)

    aligned = align_to(copy, net, method=method, probe=_inputs(3))

    _assert_same_parameters(aligned, net)


def test_align_matches_dead_relu_units() -> None:
    net = MLP(3, 2, width=6, depth=1, activation="relu", seed=0)
    with torch.no_grad():
        # Two units that output zero for every probe input.
        net.layers[0].bias[[1, 4]] = torch.tensor([-1e3, -2e3])
    copy = _random_symmetry(net, seed=8, signs=False)

    aligned = align_to(copy, net, method="activations", probe=_inputs(3))

    _assert_same_parameters(aligned, net)


def test_align_with_signs_rejects_relu() -> None:
    net = MLP(3, 2, width=4, depth=2, activation="relu", seed=0)

    with pytest.raises(ValueError, match="activation ReLU is not an odd"):
        align_to(net, net, signs=True)


def test_flip_rejects_relu() -> None:
    net = MLP(3, 2, width=4, depth=1, activation="relu", seed=0)

    with pytest.raises(ValueError, match="activation ReLU is not an odd"):
        flip_hidden_units(net, [np.array([1, -1, 1, 1])])


# --- anomalies of independently trained networks -----------------------------------------

# Teacher network: one hidden layer of three tanh units whose weights move
# linearly with the predictor p. A single-hidden-layer tanh network without
# redundant units is determined by its function up to permutations and sign
# flips (the uniqueness theorem of H. J. Sussmann, 1992). Students of the same
# width that fit the teacher exactly therefore equal teacher(p) up to a symmetry,
# and only alignment makes their weights comparable across p.
_ANGLES = np.deg2rad([10.0, 130.0, 250.0])
_TEACHER_WEIGHT = 1.5 * np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)  # (unit, input)
_TEACHER_WEIGHT_SLOPE = np.array([[0.3, -0.2], [0.1, 0.25], [-0.2, 0.15]])
_TEACHER_BIAS = np.array([0.5, -0.3, 0.1])
_TEACHER_BIAS_SLOPE = np.array([0.2, 0.1, -0.2])
_TEACHER_OUTPUT = np.array([1.0, -0.8, 0.6])
_TEACHER_OUTPUT_SLOPE = np.array([0.3, 0.2, 0.2])
_PREDICTORS = np.linspace(-1.0, 1.0, 9)


def _unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    # MLP(2, 1, width=3, depth=1) parameter order: layers.0.weight, layers.0.bias, layers.2.weight, layers.2.bias.
    return theta[:6].reshape(3, 2), theta[6:9], theta[9:12], theta[12]


def _teacher_targets(x: np.ndarray, p: float) -> np.ndarray:
    weight = _TEACHER_WEIGHT + p * _TEACHER_WEIGHT_SLOPE
    bias = _TEACHER_BIAS + p * _TEACHER_BIAS_SLOPE
    output = _TEACHER_OUTPUT + p * _TEACHER_OUTPUT_SLOPE
    return np.tanh(x @ weight.T + bias) @ output + 0.1


def _residuals(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    weight, bias, output, output_bias = _unpack(theta)
    return np.tanh(x @ weight.T + bias) @ output + output_bias - y


def _jacobian(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    weight, bias, output, _ = _unpack(theta)
    hidden = np.tanh(x @ weight.T + bias)  # (sample, unit)
    d_bias = (1.0 - hidden**2) * output  # (sample, unit)
    d_weight = (d_bias[:, :, None] * x[:, None, :]).reshape(len(x), 6)
    return np.concatenate([d_weight, d_bias, hidden, np.ones((len(x), 1))], axis=1)


def _train_student(x: np.ndarray, y: np.ndarray, seed: int) -> MLP:
    """Fit an MLP from its own seeded initialisation to zero loss, restarting from new seeds if stuck."""
    # Levenberg-Marquardt solves this 13-parameter least-squares problem to zero
    # loss in a few dozen steps. Some initialisations end in a local minimum
    # instead, hence the restarts.
    for restart in range(8):
        student = MLP(2, 1, width=3, depth=1, seed=seed + 1000 * restart).double()
        start = parameter_vector(student).numpy()
        fit = least_squares(_residuals, start, jac=_jacobian, args=(x, y), method="lm", xtol=1e-15, max_nfev=300)
        if np.mean(fit.fun**2) < 1e-20:
            torch.nn.utils.vector_to_parameters(torch.from_numpy(fit.x), student.parameters())
            return student
    pytest.fail(f"No student from seed {seed} fitted the teacher exactly, but the alignment test needs exact fits.")


def _loo_r2(predictors: np.ndarray, anomalies: np.ndarray) -> float:
    predicted = cross_val_predict(LinearRegression(), predictors[:, None], anomalies, cv=LeaveOneOut())
    return r2_score(anomalies, predicted, multioutput="variance_weighted")


@pytest.mark.parametrize("method", METHODS)
def test_alignment_makes_anomalies_regress_on_predictor(method: str) -> None:
    x = np.random.default_rng(0).uniform(-2.0, 2.0, size=(200, 2))
    reference = _train_student(x, _teacher_targets(x, 0.0), seed=99)
    students = [_train_student(x, _teacher_targets(x, p), seed=k) for k, p in enumerate(_PREDICTORS)]
    probe = torch.from_numpy(x)

    theta0 = parameter_vector(reference).numpy()
    unaligned, aligned = [], []
    for student in students:
        unaligned.append(parameter_vector(student).numpy() - theta0)
        matched = align_to(student, reference, method=method, probe=probe)
        aligned.append(parameter_vector(matched).numpy() - theta0)

    # Aligned anomalies are teacher(p) - teacher(0) in one fixed unit order, exactly linear in p.
    assert _loo_r2(_PREDICTORS, np.stack(aligned)) > 0.999
    assert _loo_r2(_PREDICTORS, np.stack(unaligned)) < 0.5


# --- invalid input -----------------------------------------------------------------------


def test_conv_layer_raises_type_error() -> None:
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Tanh(), nn.Linear(2, 1))

    with pytest.raises(TypeError, match="contains a Conv1d layer"):
        align_to(net, net)


def test_plain_module_raises_type_error() -> None:
    with pytest.raises(TypeError, match="Cannot align a Linear"):
        canonicalize_signs(nn.Linear(3, 2))


def test_parameters_outside_layers_raise_type_error() -> None:
    net = MLP(3, 2, width=4, depth=1, seed=0)
    net.scale = nn.Parameter(torch.ones(2))

    with pytest.raises(TypeError, match="parameters outside its .layers Sequential"):
        permute_hidden_units(net, [np.arange(4)])


def test_activations_without_probe_raise() -> None:
    net = MLP(3, 2, width=4, depth=1, seed=0)

    with pytest.raises(ValueError, match="needs probe inputs"):
        align_to(net, net, method="activations")


def test_probe_with_wrong_width_raises() -> None:
    net = MLP(3, 2, width=4, depth=1, seed=0)
    probe = torch.zeros(10, 2)

    with pytest.raises(ValueError, match=r"probe must have shape \(batch, 3\)"):
        align_to(net, net, method="activations", probe=probe)


def test_unknown_method_raises() -> None:
    net = MLP(3, 2, width=4, depth=1, seed=0)

    with pytest.raises(ValueError, match="Unknown alignment method 'cosine'"):
        align_to(net, net, method="cosine")


def test_different_shapes_raise() -> None:
    net = MLP(3, 2, width=4, depth=1, seed=0)
    wider = MLP(3, 2, width=5, depth=1, seed=0)

    with pytest.raises(ValueError, match="same linear layer shapes"):
        align_to(net, wider)


def test_invalid_permutation_raises() -> None:
    net = MLP(3, 2, width=4, depth=1, seed=0)

    with pytest.raises(ValueError, match="is not a permutation"):
        permute_hidden_units(net, [np.array([0, 1, 1, 3])])


def test_wrong_number_of_layers_raises() -> None:
    net = MLP(3, 2, width=4, depth=2, seed=0)

    with pytest.raises(ValueError, match="has 1 entries but the network has 2 hidden layers"):
        flip_hidden_units(net, [np.ones(4)])
