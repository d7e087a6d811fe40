"""Align the hidden units of fully connected networks before their weights are compared.

Two networks that compute the same function can have very different weight
vectors. The hidden units of a layer can be reordered together with the matching
columns of the next layer's weights. For an odd activation such as tanh, a unit
can also flip the sign of its incoming weights, its bias and its outgoing
weights. Anomalies between networks that do not share a parent mean nothing until
these symmetries are removed: :func:`align_to` matches one network to another and
:func:`canonicalize_signs` picks one sign per unit.

Supported are ``nn.Sequential`` models, and modules whose ``.layers`` attribute is
one (such as :class:`condupdate.emulators.MLP`), made of ``nn.Linear`` layers and
elementwise activations. The hidden units of layer ``l`` are the outputs of the
``l``-th ``nn.Linear`` after the activations that follow it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["align_to", "canonicalize_signs", "flip_hidden_units", "permute_hidden_units"]

# Activation modules that act on each unit separately and have no per-unit
# parameters, so reordering the units of a layer commutes with them.
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.CELU,
    nn.Dropout,
    nn.ELU,
    nn.GELU,
    nn.Hardshrink,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Identity,
    nn.LeakyReLU,
    nn.LogSigmoid,
    nn.Mish,
    nn.PReLU,
    nn.ReLU,
    nn.ReLU6,
    nn.SELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Softshrink,
    nn.Softsign,
    nn.Tanh,
    nn.Tanhshrink,
    nn.Threshold,
)

# Activations with f(-x) = -f(x). Dropout is odd in both modes because it only
# rescales each element. Hardtanh is odd only when its clipping range is symmetric.
_ODD: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Hardshrink,
    nn.Identity,
    nn.Softshrink,
    nn.Softsign,
    nn.Tanh,
    nn.Tanhshrink,
)

_METHODS = ("weights", "activations")


@dataclass
class _Stack:
    """The ``nn.Linear`` layers of a network and the activations after each hidden one."""

    linears: list[nn.Linear]
    # activations[l] contains the modules between linears[l] and linears[l + 1].
    activations: list[list[nn.Module]]
    # Modules before the first nn.Linear. They act on the inputs, not on hidden units.
    leading: list[nn.Module]

    @property
    def n_hidden(self) -> int:
        return len(self.linears) - 1

    def hidden_sizes(self) -> list[int]:
        return [linear.out_features for linear in self.linears[:-1]]


def _flatten_sequential(sequential: nn.Sequential) -> list[nn.Module]:
    modules: list[nn.Module] = []
    for module in sequential:
        if isinstance(module, nn.Sequential):
            modules += _flatten_sequential(module)
        else:
            modules.append(module)
    return modules


def _find_sequential(model: nn.Module) -> nn.Sequential:
    if isinstance(model, nn.Sequential):
        return model
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.Sequential):
        # Only the parameters below .layers are touched, so the forward pass must be layers(x).
        # NOTE: a forward that does more (a skip connection, say) is not detected.
        inside = {id(p) for p in layers.parameters()}
        outside = [name for name, p in model.named_parameters() if id(p) not in inside]
        if outside:
            raise TypeError(
                f"{type(model).__name__} has parameters outside its .layers Sequential ({', '.join(outside)}). "
                "Alignment supports only networks whose parameters all belong to nn.Linear layers in .layers."
            )
        return layers
    raise TypeError(
        f"Cannot align a {type(model).__name__}: expected an nn.Sequential of nn.Linear layers and "
        "elementwise activations, or a module whose .layers attribute is such a Sequential (as in condupdate's MLP)."
    )


def _parse(model: nn.Module) -> _Stack:
    """Split a supported network into its linear layers and hidden activations, or raise TypeError."""
    modules = _flatten_sequential(_find_sequential(model))

    linears: list[nn.Linear] = []
    activations: list[list[nn.Module]] = []
    leading: list[nn.Module] = []
    for module in modules:
        if isinstance(module, nn.Linear):
            linears.append(module)
            activations.append([])
        elif isinstance(module, _ELEMENTWISE):
            if isinstance(module, nn.PReLU) and module.num_parameters != 1:
                raise TypeError(
                    f"Cannot align a network with nn.PReLU(num_parameters={module.num_parameters}): its slopes "
                    "differ per unit and are not permuted. Use nn.PReLU() with one shared slope."
                )
            (activations[-1] if linears else leading).append(module)
        else:
            raise TypeError(
                f"Cannot align a network that contains a {type(module).__name__} layer. Only nn.Linear layers "
                "and elementwise activations (nn.Tanh, nn.ReLU, ...) are supported."
            )

    if not linears:
        raise TypeError(f"Cannot align a {type(model).__name__} without any nn.Linear layer.")
    for index, (before, after) in enumerate(zip(linears[:-1], linears[1:])):
        if before.out_features != after.in_features:
            raise ValueError(
                f"Linear layer {index} has {before.out_features} outputs but linear layer {index + 1} expects "
                f"{after.in_features} inputs, so the network cannot run as given."
            )

    # Modules after the last nn.Linear act on the outputs, which are never permuted.
    return _Stack(linears=linears, activations=activations[:-1], leading=leading)


def _is_odd(module: nn.Module) -> bool:
    if isinstance(module, nn.Hardtanh):  # includes nn.ReLU6, which clips to [0, 6]
        return module.min_val == -module.max_val
    return isinstance(module, _ODD)


def _first_non_odd(stack: _Stack, layer: int) -> nn.Module | None:
    for module in stack.activations[layer]:
        if not _is_odd(module):
            return module
    return None


def _require_odd(stack: _Stack, layer: int, action: str) -> None:
    module = _first_non_odd(stack, layer)
    if module is not None:
        raise ValueError(
            f"Cannot {action} of hidden layer {layer}: its activation {type(module).__name__} is not an odd "
            "function, so a sign flip changes what the network computes. Sign symmetry exists only for odd "
            "activations such as nn.Tanh."
        )


def _incoming(linear: nn.Linear) -> np.ndarray:
    """Return each unit's incoming weights followed by its bias, ``(out_features, in_features + 1)``, float64."""
    weight = linear.weight.detach().to("cpu", torch.float64).numpy()
    if linear.bias is None:
        bias = np.zeros(linear.out_features)
    else:
        bias = linear.bias.detach().to("cpu", torch.float64).numpy()
    return np.concatenate([weight, bias[:, None]], axis=1)


def _apply(stack: _Stack, layer: int, permutation: np.ndarray, signs: np.ndarray) -> None:
    """Reorder and sign-flip the units of one hidden layer in place: new unit i is old unit permutation[i]."""
    incoming, outgoing = stack.linears[layer], stack.linears[layer + 1]
    index = torch.as_tensor(permutation, dtype=torch.long, device=incoming.weight.device)

    # Multiplying by +-1 and reindexing are exact in floating point, so applying a
    # symmetry and then its inverse gives back bit-identical weights.
    with torch.no_grad():
        sign = torch.as_tensor(signs, dtype=incoming.weight.dtype, device=incoming.weight.device)
        incoming.weight.copy_(incoming.weight[index] * sign[:, None])
        if incoming.bias is not None:
            incoming.bias.copy_(incoming.bias[index] * sign)

        sign = torch.as_tensor(signs, dtype=outgoing.weight.dtype, device=outgoing.weight.device)
        outgoing.weight.copy_(outgoing.weight[:, index] * sign[None, :])


def _check_per_layer(values: Sequence[np.ndarray], sizes: list[int], name: str) -> list[np.ndarray]:
    if len(values) != len(sizes):
        raise ValueError(
            f"{name} has {len(values)} entries but the network has {len(sizes)} hidden layers. "
            "Pass one array per hidden layer, in order from input to output."
        )
    arrays = [np.asarray(value).reshape(-1) for value in values]
    for layer, (array, size) in enumerate(zip(arrays, sizes)):
        if array.size != size:
            raise ValueError(f"{name}[{layer}] has {array.size} entries but hidden layer {layer} has {size} units.")
    return arrays


def permute_hidden_units(model: nn.Module, permutations: Sequence[np.ndarray]) -> nn.Module:
    """Reorder the hidden units of each layer, which leaves the network's function unchanged.

    Parameters
    ----------
    model : torch.nn.Module
        An ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations, or
        a module whose ``.layers`` attribute is one, such as
        :class:`condupdate.emulators.MLP`.
    permutations : sequence of int arrays
        One permutation of ``range(width)`` per hidden layer, input side first.
        Unit ``i`` of the result is unit ``permutations[l][i]`` of ``model``.

    Returns
    -------
    torch.nn.Module
        A deep copy of ``model`` with the rows of each hidden layer's weights and
        bias, and the matching columns of the next layer's weights, reordered.

    Raises
    ------
    TypeError
        If ``model`` contains a module other than ``nn.Linear`` and elementwise activations.
    ValueError
        If the number or the length of the permutations does not match the hidden
        layers, or an entry is not a permutation.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from condupdate.emulators import MLP
    >>> net = MLP(2, 1, width=4, depth=2, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> shuffled = permute_hidden_units(net, [rng.permutation(4), rng.permutation(4)])
    >>> x = torch.randn(5, 2)
    >>> torch.allclose(net(x), shuffled(x), atol=1e-6)
    True
    """
    out = copy.deepcopy(model)
    stack = _parse(out)
    arrays = _check_per_layer(permutations, stack.hidden_sizes(), "permutations")

    for layer, permutation in enumerate(arrays):
        if not np.array_equal(np.sort(permutation), np.arange(permutation.size)):
            raise ValueError(
                f"permutations[{layer}] = {permutation.tolist()} is not a permutation of "
                f"0..{permutation.size - 1}. Pass for example numpy.random.default_rng().permutation(n)."
            )
        _apply(stack, layer, permutation.astype(np.int64), np.ones(permutation.size))
    return out


def flip_hidden_units(model: nn.Module, signs: Sequence[np.ndarray]) -> nn.Module:
    """Flip the sign of chosen hidden units of a network with odd activations, keeping its function.

    Flipping unit ``j`` negates its incoming weights, its bias and its outgoing
    weights. The next layer receives the same input because ``f(-z) = -f(z)`` for
    an odd activation ``f`` such as ``tanh``.

    Parameters
    ----------
    model : torch.nn.Module
        A supported network (see :func:`permute_hidden_units`).
    signs : sequence of arrays of +1 and -1
        One array per hidden layer, input side first. ``-1`` flips that unit.

    Returns
    -------
    torch.nn.Module
        A deep copy of ``model`` with the chosen units flipped.

    Raises
    ------
    TypeError
        If ``model`` is not a supported network.
    ValueError
        If the number or length of the sign arrays does not match the hidden
        layers, or an entry is neither +1 nor -1. Also if a unit is flipped in a
        layer whose activation is not odd (such as ``nn.ReLU``), because there a
        flip would change the function.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from condupdate.emulators import MLP
    >>> net = MLP(2, 1, width=3, depth=1, seed=0)
    >>> flipped = flip_hidden_units(net, [np.array([1, -1, -1])])
    >>> x = torch.randn(5, 2)
    >>> torch.allclose(net(x), flipped(x), atol=1e-6)
    True
    """
    out = copy.deepcopy(model)
    stack = _parse(out)
    arrays = _check_per_layer(signs, stack.hidden_sizes(), "signs")

    for layer, sign in enumerate(arrays):
        if not np.all(np.isin(sign, (-1, 1))):
            raise ValueError(f"signs[{layer}] must contain only +1 and -1, got {sign.tolist()}.")
        if np.any(sign == -1):
            _require_odd(stack, layer, "flip units")
        _apply(stack, layer, np.arange(sign.size), sign.astype(np.float64))
    return out


def _canonical_signs(features: np.ndarray) -> np.ndarray:
    """Return the sign per row that makes the first nonzero of (bias, sum of weights, weights...) positive.

    ``features`` is ``(units, in_features + 1)`` with the bias last. Negating a row
    negates every key exactly (rounding to nearest is symmetric), so a unit and its
    flipped copy get opposite signs and the same canonical form.
    """
    keys = np.concatenate([features[:, -1:], features[:, :-1].sum(axis=1, keepdims=True), features[:, :-1]], axis=1)
    nonzero = keys != 0
    first = np.argmax(nonzero, axis=1)
    deciding = keys[np.arange(keys.shape[0]), first]
    # A unit whose weights and bias are all zero outputs f(0) = 0 and keeps +1.
    return np.where(deciding < 0, -1.0, 1.0)


def canonicalize_signs(model: nn.Module) -> nn.Module:
    """Flip hidden units of an odd-activation network so that each unit's bias is positive.

    Layers are processed from input to output, because a flip in layer ``l``
    changes the incoming weights of layer ``l + 1`` but nothing before it. For each
    unit the sign is decided by the first nonzero value of: its bias, the sum of its
    incoming weights, then its incoming weights in input order. That value is made
    positive. A unit with all incoming weights and bias zero is left as it is.

    The rule is exact, so a network and any sign-flipped copy of it map to
    identical weights, and applying the function twice changes nothing more. It does not
    remove permutations, which :func:`align_to` does.

    Parameters
    ----------
    model : torch.nn.Module
        A supported network (see :func:`permute_hidden_units`) whose hidden
        activations are all odd functions, such as ``nn.Tanh``.

    Returns
    -------
    torch.nn.Module
        A deep copy of ``model`` that computes the same function.

    Raises
    ------
    TypeError
        If ``model`` is not a supported network.
    ValueError
        If a hidden activation is not odd (``nn.ReLU``, ``nn.GELU``, ``nn.SiLU``,
        ``nn.ELU``, ``nn.Sigmoid``, ...), because those units have no sign symmetry.
        Positive rescaling of ReLU units is a symmetry too, but it is not canonicalised here.

    Examples
    --------
    >>> from condupdate.emulators import MLP
    >>> net = MLP(2, 1, width=3, depth=1, seed=0)
    >>> canonical = canonicalize_signs(net)
    >>> bool((canonical.layers[0].bias > 0).all())
    True
    """
    out = copy.deepcopy(model)
    stack = _parse(out)
    for layer in range(stack.n_hidden):
        _require_odd(stack, layer, "canonicalise signs")

    for layer in range(stack.n_hidden):
        signs = _canonical_signs(_incoming(stack.linears[layer]))
        _apply(stack, layer, np.arange(signs.size), signs)
    return out


def _hidden_activations(model: nn.Module, probe: torch.Tensor) -> list[np.ndarray]:
    """Return the output of each hidden layer on ``probe``, ``(batch, units)`` per layer, float64."""
    evaluated = copy.deepcopy(model).eval()  # no dropout noise in the comparison
    stack = _parse(evaluated)
    parameter = stack.linears[0].weight
    x = probe.detach().to(device=parameter.device, dtype=parameter.dtype).reshape(-1, stack.linears[0].in_features)

    outputs = []
    with torch.no_grad():
        for module in stack.leading:
            x = module(x)
        for layer in range(stack.n_hidden):
            x = stack.linears[layer](x)
            for module in stack.activations[layer]:
                x = module(x)
            outputs.append(x.to("cpu", torch.float64).numpy())
    return outputs


def _standardise(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale each column to unit norm, and mark the columns that are constant."""
    centred = activations - activations.mean(axis=0)
    spread = np.linalg.norm(centred, axis=0)
    # Relative test, because centring a constant float column leaves rounding noise.
    constant = spread <= 1e-6 * np.linalg.norm(activations, axis=0)
    scaled = np.divide(centred, spread, out=np.zeros_like(centred), where=~constant)
    return scaled, constant


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norm_a = np.linalg.norm(a, axis=1, keepdims=True)
    norm_b = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(norm_a > 0, norm_a, 1.0)) @ (b / np.where(norm_b > 0, norm_b, 1.0)).T


def _activation_similarity(
    reference_activations: np.ndarray,
    model_activations: np.ndarray,
    reference_features: np.ndarray,
    model_features: np.ndarray,
) -> np.ndarray:
    """Return the Pearson correlation over the probe of each (reference unit, model unit) pair.

    A unit that is constant over the probe (a dead ReLU unit) has no correlation.
    Two constant units are compared by the cosine of their incoming weights and
    bias, and a constant unit against a varying one gets similarity 0.
    """
    reference_scaled, reference_constant = _standardise(reference_activations)
    model_scaled, model_constant = _standardise(model_activations)
    similarity = reference_scaled.T @ model_scaled  # (reference unit, model unit)

    both_constant = reference_constant[:, None] & model_constant[None, :]
    if both_constant.any():
        similarity = np.where(both_constant, _cosine(reference_features, model_features), similarity)
    return similarity


def _match(similarity: np.ndarray, signs: bool) -> tuple[np.ndarray, np.ndarray]:
    """Find the permutation that maximises total similarity, and the sign of each match."""
    score = np.abs(similarity) if signs else similarity
    reference_units, model_units = linear_sum_assignment(score, maximize=True)
    permutation = model_units[np.argsort(reference_units)]

    flips = np.ones(permutation.size)
    if signs:
        matched = similarity[np.arange(permutation.size), permutation]
        flips[matched < 0] = -1.0
    return permutation, flips


def align_to(
    model: nn.Module,
    reference: nn.Module,
    method: str = "weights",
    probe: torch.Tensor | None = None,
    signs: bool | None = None,
) -> nn.Module:
    """Permute, and for odd activations sign-flip, the hidden units of ``model`` to match ``reference``.

    Layers are matched from input to output, so when hidden layer ``l`` is matched
    the columns of ``model``'s weights already follow the unit order of
    ``reference``'s layer ``l - 1``. Every pair of a ``reference`` unit and a
    ``model`` unit gets a similarity, and the Hungarian algorithm
    (:func:`scipy.optimize.linear_sum_assignment`) picks the one-to-one matching
    with the largest total. With signs allowed, the matching
    maximises the absolute similarity and then flips every unit whose match is
    negative. Outputs are never permuted. Positive rescaling of ReLU units is not
    undone: a rescaled copy is matched, but its weights keep their scale.

    When ``model`` is a permuted (and, for odd activations, sign-flipped) copy of
    ``reference`` with distinct units, both methods return ``reference``'s weights
    exactly, because the symmetries are applied by reindexing and negation only.

    Parameters
    ----------
    model : torch.nn.Module
        The network to align, for example a network trained from another
        initialisation. Supported are ``nn.Sequential`` models of ``nn.Linear``
        layers and elementwise activations and modules whose ``.layers`` is one,
        such as :class:`condupdate.emulators.MLP`.
    reference : torch.nn.Module
        A network with the same linear layer shapes, for example the parent.
    method : {"weights", "activations"}, default "weights"
        ``"weights"``: the similarity is the inner product of the two units'
        incoming weights and bias, which maximised over a matching is the same as
        minimising the summed squared weight distance. ``"activations"``: the
        similarity is the Pearson correlation of the two units' outputs over
        ``probe``. Two units that are constant over the probe are compared by the
        cosine of their incoming weights and bias instead.
    probe : torch.Tensor, shape (batch, in_features), optional
        Inputs on which activations are compared. Required for
        ``method="activations"`` and ignored otherwise. Use inputs from the
        regime the networks are meant for, in the units the networks expect.
    signs : bool, optional
        Whether to undo sign flips. ``None`` allows them in every hidden layer
        whose activations are all odd (``nn.Tanh``) and not elsewhere. ``True``
        requires odd activations in every hidden layer. ``False`` only permutes.

    Returns
    -------
    torch.nn.Module
        A deep copy of ``model`` that computes the same function, with its hidden
        units reordered (and flipped) to follow ``reference``.

    Raises
    ------
    TypeError
        If either network contains a module other than ``nn.Linear`` layers and
        elementwise activations.
    ValueError
        If ``method`` is unknown, ``probe`` is missing or has the wrong shape for
        ``method="activations"``, the linear layer shapes of the two networks
        differ, or ``signs=True`` with a hidden activation that is not odd.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from condupdate.emulators import MLP
    >>> net = MLP(2, 1, width=4, depth=2, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> shuffled = permute_hidden_units(net, [rng.permutation(4), rng.permutation(4)])
    >>> shuffled = flip_hidden_units(shuffled, [np.array([1, -1, 1, -1]), np.array([-1, 1, 1, 1])])
    >>> aligned = align_to(shuffled, net)
    >>> all(torch.equal(a, b) for a, b in zip(aligned.parameters(), net.parameters()))
    True
    """
    if method not in _METHODS:
        raise ValueError(f"Unknown alignment method {method!r}. Choose one of {list(_METHODS)}.")
    if method == "activations" and probe is None:
        raise ValueError(
            "Missing probe: method='activations' compares hidden-unit outputs and needs probe inputs. "
            "Pass probe=<tensor of shape (batch, in_features)>, or use method='weights'."
        )

    out = copy.deepcopy(model)
    stack = _parse(out)
    reference_stack = _parse(reference)
    shapes = [tuple(linear.weight.shape) for linear in stack.linears]
    reference_shapes = [tuple(linear.weight.shape) for linear in reference_stack.linears]
    if shapes != reference_shapes:
        raise ValueError(
            f"model and reference must have the same linear layer shapes (out_features, in_features), "
            f"got {shapes} and {reference_shapes}."
        )

    if signs is None:
        flip_allowed = [_first_non_odd(stack, layer) is None for layer in range(stack.n_hidden)]
    elif signs:
        for layer in range(stack.n_hidden):
            _require_odd(stack, layer, "undo sign flips")
        flip_allowed = [True] * stack.n_hidden
    else:
        flip_allowed = [False] * stack.n_hidden

    if method == "activations":
        in_features = stack.linears[0].in_features
        if probe.ndim < 2 or probe.shape[-1] != in_features or probe.numel() // in_features < 2:
            raise ValueError(
                f"probe must have shape (batch, {in_features}) with batch >= 2 to compare activations, "
                f"got shape {tuple(probe.shape)}."
            )
        # Symmetries do not change a unit's output, only its position and sign, so
        # the activations of the unaligned model give the order of units in layer l
        # before layer l is permuted.
        model_activations = _hidden_activations(model, probe)
        reference_activations = _hidden_activations(reference, probe)

    for layer in range(stack.n_hidden):
        model_features = _incoming(stack.linears[layer])
        reference_features = _incoming(reference_stack.linears[layer])
        if method == "weights":
            similarity = reference_features @ model_features.T  # (reference unit, model unit)
        else:
            similarity = _activation_similarity(
                reference_activations[layer], model_activations[layer], reference_features, model_features
            )

        permutation, flips = _match(similarity, flip_allowed[layer])
        _apply(stack, layer, permutation, flips)
    return out
