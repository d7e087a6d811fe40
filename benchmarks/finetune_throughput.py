"""Time sequential and batched fine-tuning on the same data and print one JSON line per case.

For each number of subsets K and each MLP size, the script fine-tunes K fresh
copies of one parent twice in this process: one after another with
``condupdate.emulators.train`` (the loop of ``ConditionalUpdate.fit_anomalies``)
and all at once with ``condupdate.update.batched.finetune_batched``. Both runs use
the same subsets, seeds and a fixed number of epochs (patience 0), so both train
on the same batches. The batched engine also computes on the padding rows of
short batches, which the FLOP count below leaves out. Each line gives:

- ``sequential_s``, ``batched_s``: shortest wall time of ``--repeats`` runs [s],
  after one warm-up call of each engine, and ``ratio`` = sequential / batched;
- ``sequential_cpu_s``, ``batched_cpu_s``: CPU time of the process in those runs
  [s], summed over threads. On a machine shared with other work it shows how much
  of the wall time this process computed (threads that spin while waiting count too);
- ``batched_gflops``: floating-point rate of the batched run [GFLOP s-1], counting
  a training sample as 3 forward passes (forward plus backward) and a validation
  sample as 1, with a forward pass of 2 FLOPs per weight of each linear layer;
- ``matmul_gflops``: rate of plain ``torch.matmul`` calls of the shapes of the
  batched forward pass, (K, batch, n_in) @ (K, n_in, n_out), timed in the same run;
- ``gflops_fraction`` = batched_gflops / matmul_gflops;
- ``max_abs_difference``: largest difference between the two runs' anomalies.

The parent is a freshly initialised MLP: fine-tuning costs the same from any
weights. Each subset has between 300 and 3000 samples.

Usage: python benchmarks/finetune_throughput.py [--quick] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from condupdate.emulators import MLP, TrainConfig, train
from condupdate.update.batched import finetune_batched
from condupdate.update.spaces import AllParameters

N_INPUTS = 16
N_OUTPUTS = 1
# Hidden width per MLP size, with 3 hidden layers: 9,473 and 101,201 parameters.
WIDTHS = {"small": 64, "large": 220}
DEPTH = 3
SUBSET_SAMPLES = (300, 3000)  # smallest and largest subset [samples]
T = TypeVar("T")

CONFIG = TrainConfig(epochs=3, batch_size=256, learning_rate=3e-4, validation_fraction=0.1, patience=0)


def make_subsets(n_subsets: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Draw subsets of standardised inputs and a smooth noisy target, each with its own shift."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((N_INPUTS, N_OUTPUTS)) / N_INPUTS**0.5
    subsets = []
    for k in range(n_subsets):
        n = int(rng.integers(SUBSET_SAMPLES[0], SUBSET_SAMPLES[1] + 1))
        X = rng.standard_normal((n, N_INPUTS)) + 0.1 * k / n_subsets
        y = np.tanh(X @ weights) + 0.1 * rng.standard_normal((n, N_OUTPUTS))
        subsets.append((X.astype(np.float32), y.astype(np.float32)))
    return subsets


def forward_flops_per_sample(model: nn.Module) -> int:
    """Count 2 FLOPs per weight of every linear layer (one multiply and one add)."""
    return sum(2 * m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def run_flops(model: nn.Module, subsets: list, config: TrainConfig) -> float:
    """FLOPs of fine-tuning every subset for config.epochs epochs, as train() splits the samples."""
    forward = forward_flops_per_sample(model)
    total = 0.0
    for X, _ in subsets:
        n_val = int(round(config.validation_fraction * len(X))) if len(X) >= 10 else 0
        total += config.epochs * (3 * forward * (len(X) - n_val) + forward * n_val)
    return total


def matmul_gflops(model: nn.Module, n_members: int, batch_size: int, repeats: int = 20) -> float:
    """Time torch.matmul of the batched forward shapes of every linear layer; return GFLOP s-1."""
    generator = torch.Generator().manual_seed(0)
    pairs = [
        (
            torch.randn(n_members, batch_size, m.in_features, generator=generator),
            torch.randn(n_members, m.in_features, m.out_features, generator=generator),
        )
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    flops = sum(2 * n_members * batch_size * a.shape[2] * b.shape[2] for a, b in pairs)
    for a, b in pairs:
        torch.matmul(a, b)  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in pairs:
            torch.matmul(a, b)
    return repeats * flops / (time.perf_counter() - start) / 1e9


def run_sequential(parent: nn.Module, subsets: list, config: TrainConfig, seeds: list[int]) -> np.ndarray:
    """Fine-tune one deep copy per subset with train(); return the anomalies (subset, parameter)."""
    space = AllParameters()
    theta0 = space.vector(parent)
    rows = []
    for (X, y), seed in zip(subsets, seeds):
        model = copy.deepcopy(parent)
        train(model, X, y, config.replace(seed=seed))
        rows.append((space.vector(model) - theta0).numpy())
    return np.stack(rows)


def best_time(function: Callable[[], T], repeats: int) -> tuple[float, float, T]:
    """Return the shortest wall time [s] of ``repeats`` calls, the CPU time of that call [s], and the last result."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = min(times)
    return wall, cpu, result


def measure(n_members: int, size: str, repeats: int) -> dict[str, object]:
    """Time both engines for one case and return its JSON record."""
    parent = MLP(N_INPUTS, N_OUTPUTS, width=WIDTHS[size], depth=DEPTH, seed=0)
    subsets = make_subsets(n_members, seed=n_members)
    seeds = list(range(n_members))

    # Warm up both engines: the first call in a process pays one-off costs of torch.
    run_sequential(parent, subsets[:2], CONFIG, seeds[:2])
    finetune_batched(parent, subsets[:2], CONFIG, seeds=seeds[:2])

    sequential_s, sequential_cpu_s, sequential = best_time(
        lambda: run_sequential(parent, subsets, CONFIG, seeds), repeats
    )
    batched_s, batched_cpu_s, (batched, _) = best_time(
        lambda: finetune_batched(parent, subsets, CONFIG, seeds=seeds), repeats
    )

    batched_rate = run_flops(parent, subsets, CONFIG) / batched_s / 1e9
    reference_rate = matmul_gflops(parent, n_members, CONFIG.batch_size)
    return {
        "K": n_members,
        "mlp": size,
        "n_parameters": sum(p.numel() for p in parent.parameters()),
        "samples": sum(len(X) for X, _ in subsets),
        "epochs": CONFIG.epochs,
        "batch_size": CONFIG.batch_size,
        "repeats": repeats,
        "sequential_s": round(sequential_s, 3),
        "batched_s": round(batched_s, 3),
        "ratio": round(sequential_s / batched_s, 2),
        "sequential_cpu_s": round(sequential_cpu_s, 3),
        "batched_cpu_s": round(batched_cpu_s, 3),
        "batched_gflops": round(batched_rate, 2),
        "matmul_gflops": round(reference_rate, 2),
        "gflops_fraction": round(batched_rate / reference_rate, 3),
        "max_abs_difference": float(np.abs(batched - sequential).max()),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time only K=32 with the small MLP (under a minute)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine and case; the shortest counts")
    parser.add_argument("--threads", type=int, help="torch intra-op threads; default torch's own choice")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cases = [(32, "small")] if args.quick else [(k, size) for size in WIDTHS for k in (8, 32, 128)]
    for n_members, size in cases:
        print(json.dumps(measure(n_members, size, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
