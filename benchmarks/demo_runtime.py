"""Time the demo and its quick mode in one process and print one JSON line each.

Each line gives the wall time of every phase, the RMSE of each method on the
application selection [K], and the fraction of the time budget used (3 minutes
for the full demo, 30 seconds for --quick).

Usage: python benchmarks/demo_runtime.py [--quick-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from condupdate.cli import demo_config
from condupdate.jobs.run import run

BUDGET_S = {"full": 180.0, "quick": 30.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick-only", action="store_true", help="time only the quick demo")
    args = parser.parse_args()

    modes = ["quick"] if args.quick_only else ["quick", "full"]
    for mode in modes:
        start = time.perf_counter()
        result = run(demo_config(quick=mode == "quick"))
        wall = time.perf_counter() - start
        table = result.skill["air_temperature"]
        record = {
            "mode": mode,
            "wall_s": round(wall, 2),
            "budget_fraction": round(wall / BUDGET_S[mode], 3),
            **{k: round(v, 2) for k, v in result.timings.items()},
            **{f"rmse_{m}": round(float(table.rmse.sel({"method": m})), 3) for m in table.method.values},
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
