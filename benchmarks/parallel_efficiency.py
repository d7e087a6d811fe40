"""Time the demo's fine-tunes in this process and on a 2-worker LocalCluster, and print one JSON line.

Both runs are ``condupdate.run(condupdate.cli.demo_config())`` without output
files, with one torch thread per unit (the default). The serial run computes
every unit in this process, and the cluster run submits them to the
``LocalCluster`` that ``condupdate run --workers N`` starts
(:func:`condupdate.jobs.distributed.local_cluster`: N processes on 127.0.0.1,
one thread each).
The cluster is started, and a tiny network trained on each worker, before the
clock starts, so that start-up cost is reported apart (``cluster_start_s``).
The serial run comes first and is not warmed up the same way. The line
gives:

- ``serial_s``, ``cluster_s``: wall time of the fine-tuning phase
  (``timings["finetune_s"]`` of the run: the fine-tunes of all subsets, then the
  weight regression, which takes well under a second) [s];
- ``speedup`` = serial_s / cluster_s and ``efficiency`` = speedup / workers;
- ``parent_serial_s``, ``parent_cluster_s``: wall time of the parent training,
  one unit, which cannot run in parallel [s];
- ``serial_cpu_s``, ``cluster_cpu_s``: CPU time of the whole run [s], of this
  process for the serial run and of this process plus the workers for the
  cluster run. Equal CPU times with a longer ``cluster_s`` mean that the workers
  waited for cores, for example on a machine shared with other work;
- ``identical``: whether the two anomaly stores agree bit for bit;
- ``units``: fine-tuning units per run, ``cpus``: ``os.cpu_count()``, and
  ``load_before``: the 1-minute load average when the script started.

Each run is repeated ``--repeats`` times, serial and cluster runs alternating,
and the shortest times are reported.

Usage: python benchmarks/parallel_efficiency.py [--workers N] [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from condupdate.cli import demo_config
from condupdate.jobs.distributed import local_cluster
from condupdate.jobs.run import run


def _warm_up() -> str:
    # Runs on each worker before timing, so that no timed unit pays for importing
    # condupdate and torch or for torch's set-up on its first training step.
    import numpy as np
    import torch

    from condupdate.emulators import MLP, TrainConfig, train

    X = np.random.default_rng(0).standard_normal((64, 3))
    train(MLP(3, 1, width=8, depth=1, seed=0), X, X[:, :1], TrainConfig(epochs=1, batch_size=32))
    return torch.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster (default: 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind, alternating (default: 2)")
    parser.add_argument("--quick", action="store_true", help="the demo's quick settings: a smoke test, not a measurement")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    config = demo_config(quick=args.quick)

    from distributed import Client

    tic = time.perf_counter()
    serial_runs, cluster_runs = [], []
    with local_cluster(args.workers) as cluster, Client(cluster, set_as_default=False) as client:
        client.run(_warm_up)
        cluster_start_s = time.perf_counter() - tic
        for _ in range(args.repeats):
            cpu = time.process_time()
            serial = run(config)
            serial_runs.append((serial.timings, time.process_time() - cpu))

            cpu, workers_cpu = time.process_time(), client.run(time.process_time)
            parallel = run(config, client=client)
            workers_cpu = sum(t - workers_cpu[w] for w, t in client.run(time.process_time).items())
            cluster_runs.append((parallel.timings, time.process_time() - cpu + workers_cpu))

    serial_s = min(timings["finetune_s"] for timings, _ in serial_runs)
    cluster_s = min(timings["finetune_s"] for timings, _ in cluster_runs)
    speedup = serial_s / cluster_s
    print(
        json.dumps(
            {
                "benchmark": "parallel_efficiency",
                "quick": args.quick,
                "workers": args.workers,
                "repeats": args.repeats,
                "units": int(serial.update.anomalies_.sizes["subset"] * serial.update.members),
                "serial_s": round(serial_s, 2),
                "cluster_s": round(cluster_s, 2),
                "speedup": round(speedup, 3),
                "efficiency": round(speedup / args.workers, 3),
                "parent_serial_s": round(min(timings["parent_s"] for timings, _ in serial_runs), 2),
                "parent_cluster_s": round(min(timings["parent_s"] for timings, _ in cluster_runs), 2),
                "serial_cpu_s": round(min(cpu for _, cpu in serial_runs), 2),
                "cluster_cpu_s": round(min(cpu for _, cpu in cluster_runs), 2),
                "cluster_start_s": round(cluster_start_s, 2),
                "identical": serial.update.anomalies_.values.tobytes() == parallel.update.anomalies_.values.tobytes(),
                "cpus": os.cpu_count(),
                "load_before": round(load_before, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
