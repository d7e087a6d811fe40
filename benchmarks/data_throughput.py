"""Time minibatch drawing from a netCDF file by the chunked stream and from memory; print one JSON line.

The script writes a netCDF file of ``--file-mb`` megabytes into a temporary
folder: float32 fields on (time, lat, lon), with 3 % of the grid cells NaN as
land. It writes one time step at a time, so that writing needs little memory. It then
measures in one process:

1. the stream: :func:`condupdate.data.stream.open_chunked` and
   :class:`~condupdate.data.stream.ChunkedSampler` with ``--budget-mb``, one
   epoch of ``--batch-size`` minibatches, NaN samples dropped on the way;
2. memory: the same complete samples loaded into one numpy array, one epoch of
   minibatches drawn by fancy indexing ``X[rows]`` of a fresh permutation, and
   the same with ``np.take(X, rows, axis=0)``, which the stream uses.

The stream runs first, so ``peak_rss_mb`` (the process's VmHWM) is the
peak of the imports, the file writing and the stream. ``rss_increase_mb`` is
that peak minus the resident memory after the imports. The file has just been
written, so it is read from the operating system's page cache; a cold read from
disk is slower. The line gives:

- ``samples_per_s_stream``, ``samples_per_s_memory``, ``samples_per_s_memory_take``
  [samples s-1], and ``ratio`` = stream / memory (fancy indexing),
  ``ratio_take`` = stream / memory with ``np.take``;
- ``file_mb``, ``budget_mb`` [MB of 2**20 bytes], ``samples``, ``blocks`` and
  ``buffer_rows`` of the stream, ``stats_s``: time of the dask statistics pass [s].

Usage: python benchmarks/data_throughput.py [--quick] [--file-mb MB] [--budget-mb MB] [--batch-size N] [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np

from condupdate.data.stream import ChunkedSampler, fit_normalizers, open_chunked

N_LAT, N_LON = 200, 250  # grid of every time step: 50,000 samples
FEATURES = ["x0", "x1", "x2", "x3"]
TARGETS = ["y"]
SAMPLE_DIMS = ["time", "lat", "lon"]
LAND_SHARE = 0.03  # share of grid cells that are NaN at every time step


def resident_mb() -> float:
    """Return the resident memory of this process now [MB], from /proc/self/status."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def peak_mb() -> float:
    """Return the peak resident memory of this process so far [MB], from /proc/self/status.

    VmHWM equals ``ru_maxrss`` unless the parent process was larger: Linux keeps
    the parent's peak in ``ru_maxrss`` across fork and exec.
    """
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def write_file(path: Path, file_mb: float, seed: int = 0) -> int:
    """Write the fields step by step with netCDF4; return the number of time steps."""
    variables = FEATURES + TARGETS
    n_time = max(1, int(file_mb * 2**20 / (len(variables) * 4 * N_LAT * N_LON)))
    rng = np.random.default_rng(seed)
    land = rng.random((N_LAT, N_LON)) < LAND_SHARE
    weights = rng.standard_normal(len(FEATURES))
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", n_time)
        nc.createDimension("lat", N_LAT)
        nc.createDimension("lon", N_LON)
        nc.createVariable("time", "f8", ("time",))[:] = np.arange(n_time)
        nc.createVariable("lat", "f8", ("lat",))[:] = np.linspace(-89.5, 89.5, N_LAT)
        nc.createVariable("lon", "f8", ("lon",))[:] = np.linspace(0.0, 358.56, N_LON)
        out = {name: nc.createVariable(name, "f4", SAMPLE_DIMS) for name in variables}
        for t in range(n_time):
            inputs = rng.standard_normal((len(FEATURES), N_LAT, N_LON), dtype=np.float32)
            inputs[:, land] = np.nan
            for name, field in zip(FEATURES, inputs):
                out[name][t] = field
            out["y"][t] = np.tanh(np.tensordot(weights, inputs, axes=1))
    return n_time


def stream_epoch(path: Path, budget_mb: float, batch_size: int) -> dict[str, float]:
    """Draw one epoch from the stream; return its rate and the sampler's layout."""
    ds = open_chunked(path, SAMPLE_DIMS, budget_mb)
    tic = time.perf_counter()
    fit_normalizers(ds, FEATURES, TARGETS, SAMPLE_DIMS)
    stats_s = time.perf_counter() - tic

    sampler = ChunkedSampler(ds, FEATURES, TARGETS, SAMPLE_DIMS, budget_mb)
    tic = time.perf_counter()
    samples = 0
    for X, _ in sampler.batches(epoch=0, batch_size=batch_size):
        samples += len(X)
    seconds = time.perf_counter() - tic
    ds.close()
    return {
        "samples": samples,
        "stream_s": seconds,
        "stats_s": stats_s,
        "blocks": len(sampler.blocks),
        "buffer_rows": sampler.capacity,
    }


def memory_epochs(path: Path, batch_size: int) -> tuple[int, float, float]:
    """Load the complete samples; time one epoch of X[rows] and one of np.take. Return samples and both times [s]."""
    with netCDF4.Dataset(path) as nc:
        columns = [np.asarray(nc[name][:].filled(np.nan), dtype=np.float32).reshape(-1) for name in FEATURES + TARGETS]
    data = np.stack(columns, axis=1)
    del columns
    data = data[np.isfinite(data).all(1)]
    X, y = np.ascontiguousarray(data[:, : len(FEATURES)]), np.ascontiguousarray(data[:, len(FEATURES) :])
    del data
    rng = np.random.default_rng(0)

    times = []
    for gather in ("fancy", "take"):
        tic = time.perf_counter()
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            rows = order[start : start + batch_size]
            if gather == "fancy":
                X[rows], y[rows]
            else:
                np.take(X, rows, axis=0), np.take(y, rows, axis=0)
        times.append(time.perf_counter() - tic)
    return len(X), times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 150 MB file and a 40 MB budget (under 30 s)")
    parser.add_argument("--file-mb", type=float, default=1536.0, help="size of the netCDF file [MB]")
    parser.add_argument("--budget-mb", type=float, default=256.0, help="memory budget of the stream [MB]")
    parser.add_argument("--batch-size", type=int, default=1024, help="samples per minibatch")
    parser.add_argument("--folder", help="folder for the temporary file; default the system's temporary folder")
    args = parser.parse_args()
    file_mb, budget_mb = (150.0, 40.0) if args.quick else (args.file_mb, args.budget_mb)

    baseline_mb = resident_mb()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        path = Path(folder) / "fields.nc"
        write_file(path, file_mb)
        stream = stream_epoch(path, budget_mb, args.batch_size)
        stream_peak_mb = peak_mb()
        samples, memory_s, take_s = memory_epochs(path, args.batch_size)
        size_mb = path.stat().st_size / 2**20

    if samples != stream["samples"]:
        raise RuntimeError(f"The stream drew {stream['samples']} samples, memory contains {samples}; they must agree.")
    rate_stream = samples / stream["stream_s"]
    rate_memory, rate_take = samples / memory_s, samples / take_s
    print(
        json.dumps(
            {
                "file_mb": round(size_mb, 1),
                "budget_mb": budget_mb,
                "samples": samples,
                "batch_size": args.batch_size,
                "samples_per_s_stream": round(rate_stream),
                "samples_per_s_memory": round(rate_memory),
                "samples_per_s_memory_take": round(rate_take),
                "ratio": round(rate_stream / rate_memory, 3),
                "ratio_take": round(rate_stream / rate_take, 3),
                "stream_s": round(stream["stream_s"], 2),
                "stats_s": round(stream["stats_s"], 2),
                "blocks": stream["blocks"],
                "buffer_rows": stream["buffer_rows"],
                "peak_rss_mb": round(stream_peak_mb, 1),
                "baseline_rss_mb": round(baseline_mb, 1),
                "rss_increase_mb": round(stream_peak_mb - baseline_mb, 1),
                "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "machine": platform.machine(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
