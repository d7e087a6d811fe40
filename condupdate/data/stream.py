"""Draw shuffled training minibatches from lazily opened fields within a memory budget.

The in-memory path stacks the whole training selection into numpy arrays. Here
the fields stay dask-backed and are read one block at a time: a block is a run
of steps along the first sample dimension, inside one dask chunk along it. Each
epoch visits the blocks in a random order, reads several of them into a buffer
whose size follows from the memory budget, and draws minibatches from a random
permutation of the buffer's rows. So rows from different chunks mix in every
minibatch, and a dataset larger than memory trains without ever being loaded
whole. Normalisation statistics come from dask reductions over the fields.

torch.utils.data has no buffer bounded by a memory budget over dask chunks,
and xbatcher (not a dependency) yields patches in storage order, so the
shuffling here is written out.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import dask
import numpy as np
import xarray as xr

from condupdate._errors import ConfigError, DataError
from condupdate.data.normalize import Normalizer

if TYPE_CHECKING:
    from torch import nn

    from condupdate.emulators.training import TrainConfig, TrainHistory

__all__ = [
    "ChunkedSampler",
    "budget_chunk_size",
    "check_memory_budget",
    "fit_normalizers",
    "open_chunked",
    "train_stream",
]

logger = logging.getLogger(__name__)

MIB = 2**20  # bytes in one megabyte of memory_budget_mb

# Shares of the budget, as estimates that tests/test_stream.py checks on a
# netCDF file. The buffer of float32 rows with its row indices gets 40 %.
# Reading one block (raw values, dask's concatenation of chunk pieces and one
# float64 column) gets 20 %. The rest is for the dask graph, the thread pool
# and allocator slack. Opening a file and torch's first optimiser step cost a
# fixed amount on top (about 20 MB and 50 MB with netCDF4 1.7 and torch 2.13).
_BUFFER_SHARE = 0.4
_BLOCK_SHARE = 0.2
# Dask chunks (see open_chunked): a step's chunks of every variable together
# get a thirty-second of the budget. Reductions then hold a few chunks with
# their float64 copies at once, and a chunk is no larger than a block, so the
# sampler reads whole chunks.
CHUNK_SHARE = 1 / 32


def check_memory_budget(memory_budget_mb: object, name: str = "memory_budget_mb") -> float:
    """Validate a memory budget in megabytes (2**20 bytes) and return it as a float.

    Raises
    ------
    TypeError
        If the budget is not a real number (a bool counts as not a number).
    ValueError
        If it is not finite or not positive.
    """
    if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, numbers.Real):
        raise TypeError(
            f"{name} must be a number of megabytes, got {memory_budget_mb!r} of type "
            f"{type(memory_budget_mb).__name__}; pass for example {name}=256."
        )
    budget = float(memory_budget_mb)
    if not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"{name} must be a finite number of megabytes above 0, got {memory_budget_mb!r}; pass for example {name}=256.")
    return budget


def budget_chunk_size(memory_budget_mb: float, n_variables: int = 4) -> dict[str, str]:
    """Return the dask setting that caps ``chunks="auto"`` for ``n_variables`` read together.

    Use it as ``with dask.config.set(budget_chunk_size(256)): ds = open_dataset(...)``.
    A contiguous netCDF variable is then cut into tiles, which read slower than
    the step-wise chunks of :func:`open_chunked` but keep reductions within the budget.
    """
    budget = check_memory_budget(memory_budget_mb)
    return {"array.chunk-size": f"{max(int(CHUNK_SHARE * budget * MIB / max(n_variables, 1)), 1)}B"}


def open_chunked(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    sample_dims: Sequence[str],
    memory_budget_mb: float,
    engine: str | None = None,
) -> xr.Dataset:
    """Open files lazily with dask chunks that cut only the first sample dim, sized from the budget.

    One chunk of every variable on the first sample dim together takes about
    ``CHUNK_SHARE`` of the budget, because reductions over several variables
    hold a chunk of each, with float64 copies, at once. Chunks that span the
    other sample dims whole are read from a contiguous netCDF variable in one
    run per step. Square tiles of the same size were about ten times slower to
    read in a test on 2 cores, because every tile row is a separate read.

    Parameters
    ----------
    paths : path or sequence of paths
        As for :func:`condupdate.data.open_dataset`.
    sample_dims : sequence of str
        Dims that index samples; length-one ones are kept.
    memory_budget_mb : float
        Memory budget [MB of 2**20 bytes].
    engine : str, optional
        xarray backend for netCDF files.

    Returns
    -------
    xarray.Dataset
        Dask-backed.
    """
    from condupdate.data.io import open_dataset

    budget = check_memory_budget(memory_budget_mb)
    sample_dims = list(sample_dims)
    block_dim = sample_dims[0]
    # A first open reads metadata only, to size the chunks from the bytes per step.
    probe = open_dataset(paths, chunks={}, engine=engine, keep_dims=sample_dims)
    if block_dim not in probe.dims:
        raise DataError(f"Sample dimension {block_dim!r} not found in {paths!r}; the files have dimensions {list(probe.dims)}.")
    step_bytes = sum(
        field.dtype.itemsize * field.size // probe.sizes[block_dim]
        for field in probe.data_vars.values()
        if block_dim in field.dims
    )
    probe.close()
    steps = max(1, int(CHUNK_SHARE * budget * MIB // max(step_bytes, 1)))
    chunks = {d: -1 for d in sample_dims[1:]} | {block_dim: steps}
    return open_dataset(paths, chunks=chunks, engine=engine, keep_dims=sample_dims)


def _splitmix64_uniform(index: np.ndarray, seed: int) -> np.ndarray:
    """Map row indices to uniform numbers in [0, 1), the same for a row whatever the blocks are.

    SplitMix64 finaliser (Steele, Lea and Flood 2014, "Fast splittable
    pseudorandom number generators", OOPSLA). Array arithmetic on uint64 wraps
    modulo 2**64, which the hash relies on.
    """
    mix = np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
    z = index.astype(np.uint64) + mix
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _fields(ds: xr.Dataset, names: Sequence[str], sample_dims: list[str], role: str) -> list[xr.DataArray]:
    fields = []
    for name in names:
        if name not in ds.variables:
            raise DataError(f"{role} variable {name!r} not found; the dataset has {sorted(map(str, ds.variables))}.")
        field = ds[name].reset_coords(drop=True)
        extra = [d for d in field.dims if d not in sample_dims]
        if extra:
            raise DataError(
                f"{role} variable {name!r} has dimensions {extra} that are not sample dimensions "
                f"{sample_dims}; select a single value along them or add them to the sample dimensions."
            )
        fields.append(field.transpose(*[d for d in sample_dims if d in field.dims]))
    return fields


def _moments_dtype(n_columns: int) -> np.dtype:
    # Per-block statistics: complete rows, and per column the count, mean, sum
    # of squared deviations from the mean and minimum of the finite values.
    return np.dtype(
        [("rows", "i8"), ("n", "f8", (n_columns,)), ("mean", "f8", (n_columns,)), ("m2", "f8", (n_columns,)), ("min", "f8", (n_columns,))]
    )


def _block_moments(*blocks: np.ndarray, n_x: int, n_y: int) -> np.ndarray:
    """Compute the moments of one block of every field, counting complete samples only."""
    shape = np.broadcast_shapes(*(b.shape for b in blocks))
    valid = np.ones(shape, bool)
    any_target = np.zeros(shape, bool)
    for i, block in enumerate(blocks):
        if n_x <= i < n_x + n_y:
            any_target |= np.isfinite(block)
        else:
            valid &= np.isfinite(block)
    valid &= any_target

    out = np.zeros((1,) * len(shape), _moments_dtype(n_x + n_y))
    out["rows"] = valid.sum()
    for j in range(n_x + n_y):
        values = np.broadcast_to(blocks[j], shape)[valid & np.isfinite(blocks[j])].astype(np.float64)
        if values.size:
            mean = values.mean()
            out["n"][..., j], out["mean"][..., j] = values.size, mean
            out["m2"][..., j], out["min"][..., j] = np.square(values - mean).sum(), values.min()
        else:
            out["min"][..., j] = np.inf
    return out


def _merge_moments(moments: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-block moments into counts, means, standard deviations (ddof=0) and minima.

    Pairwise update of Chan, Golub and LeVeque (1979), "Updating formulae and a
    pairwise algorithm for computing sample variances", which keeps float64
    precision where a sum of squares minus a squared sum would lose it.
    """
    flat = moments.reshape(-1)
    n, mean, m2 = flat["n"][0].copy(), flat["mean"][0].copy(), flat["m2"][0].copy()
    for block in flat[1:]:
        total = n + block["n"]
        delta = block["mean"] - mean
        share = np.divide(block["n"], total, out=np.zeros_like(total), where=total > 0)
        m2 = m2 + block["m2"] + delta**2 * n * share
        mean = mean + delta * share
        n = total
    std = np.sqrt(np.divide(m2, n, out=np.full_like(n, np.nan), where=n > 0))
    minimum = flat["min"].min(0)
    return int(flat["rows"].sum()), n, np.where(n > 0, mean, np.nan), std, minimum


def _aligned_dask(fields: list[xr.DataArray], sample_dims: list[str], sizes: dict[str, int]) -> list:
    """Return each field as a dask array on all sample dims (length one where it lacks a dim), on common chunks."""
    import dask.array as da

    reference = max((f for f in fields if f.chunks is not None), key=lambda f: f.ndim, default=None)
    chunks = {d: sizes[d] for d in sample_dims}
    if reference is not None:
        chunks.update(dict(zip(reference.dims, reference.chunks)))
    arrays = []
    for field in fields:
        shape = [sizes[d] if d in field.dims else 1 for d in sample_dims]
        target = [chunks[d] if d in field.dims else 1 for d in sample_dims]
        data = field.data if field.chunks is not None else da.from_array(np.asarray(field.data), chunks=-1)
        arrays.append(data.reshape(shape).rechunk(target))
    return arrays


def fit_normalizers(
    ds: xr.Dataset,
    features: Sequence[str],
    targets: Sequence[str],
    sample_dims: Sequence[str],
    required: Sequence[str] = (),
) -> tuple[Normalizer, Normalizer, int]:
    """Fit input and target normalisers by a dask map-reduce over the chunks, without stacking or loading the fields.

    A sample (a cell of ``sample_dims``) counts when every feature and every
    ``required`` variable is finite there and at least one target is. This is
    the rule of the in-memory path, so the statistics equal those of
    :meth:`Normalizer.fit` on the stacked complete samples up to float64
    rounding. Fields on fewer dims (a domain mean, a climatology, a coordinate)
    are broadcast over ``sample_dims``. Each block of the fields is read once
    and reduced to a few numbers per column, which are merged in float64. The
    peak memory follows from the chunk sizes (see :func:`open_chunked`).

    Parameters
    ----------
    ds : xarray.Dataset
        Lazily opened fields; each variable's dims are a subset of ``sample_dims``.
    features, targets : sequence of str
        Columns of the input and target normalisers, in this order.
    sample_dims : sequence of str
        Dims that index samples.
    required : sequence of str
        Variables that must be finite for a sample to count (predictors, say).

    Returns
    -------
    input_normalizer, target_normalizer : Normalizer
    n_samples : int
        Number of complete samples.

    Raises
    ------
    DataError
        If no sample is complete, or a column has no finite value among them.
    """
    import dask.array as da

    sample_dims = list(sample_dims)
    missing = [d for d in sample_dims if d not in ds.dims]
    if missing:
        raise DataError(f"Sample dimensions {missing} not found; the dataset has dimensions {list(ds.dims)}.")
    fields = _fields(ds, features, sample_dims, "Input") + _fields(ds, targets, sample_dims, "Target")
    fields += _fields(ds, required, sample_dims, "Required")
    arrays = _aligned_dask(fields, sample_dims, {d: ds.sizes[d] for d in sample_dims})

    n_x, n_y = len(features), len(targets)
    moments = da.map_blocks(
        _block_moments,
        *arrays,
        n_x=n_x,
        n_y=n_y,
        dtype=_moments_dtype(n_x + n_y),
        chunks=tuple((1,) * n for n in _block_grid(arrays)),
        meta=np.empty((0,) * len(sample_dims), _moments_dtype(n_x + n_y)),
    ).compute()
    n_samples, count, mean, std, minimum = _merge_moments(moments)
    if n_samples == 0:
        raise DataError("No complete training sample: every sample has a NaN input, target or predictor.")
    names = list(features) + list(targets)
    for name, n in zip(names, count, strict=True):
        if n == 0:
            raise DataError(
                f"Column {name!r} has no finite value among the {n_samples} complete samples; "
                "check its _FillValue and mask in the files."
            )
    x_norm = Normalizer.from_statistics(names[:n_x], mean[:n_x], std[:n_x], minimum[:n_x])
    y_norm = Normalizer.from_statistics(names[n_x:], mean[n_x:], std[n_x:], minimum[n_x:])
    return x_norm, y_norm, n_samples


def _block_grid(arrays: list) -> tuple[int, ...]:
    return tuple(max(a.numblocks[axis] for a in arrays) for axis in range(arrays[0].ndim))


class ChunkedSampler:
    """Shuffled minibatches of ``(X, y)`` rows read block by block from lazily opened fields.

    Rows are the cells of ``sample_dims`` in C order, as in
    :func:`condupdate.data.stack_samples`. A row is drawn when it is complete:
    every feature and ``required`` value finite and at least one target finite,
    the rule of the in-memory path. A block is a run of steps along
    ``sample_dims[0]``, split at dask chunk boundaries and to fit the budget.
    Each epoch visits the blocks in an order drawn from ``seed`` and ``epoch``,
    fills a buffer with several blocks and yields minibatches of a random
    permutation of its rows. The rows left over from one buffer are carried
    into the next, so every minibatch but the last of an epoch is full. The same seed gives the same
    batches, whatever dask scheduler reads the data.

    Parameters
    ----------
    ds : xarray.Dataset
        Lazily opened fields. Reads stay within the budget when each dask chunk
        holds only a few blocks' worth of data, for example when the file is
        opened with ``dask.config.set({"array.chunk-size": ...})`` of about
        ``CHUNK_SHARE`` of the budget.
    features, targets : sequence of str
        Variables or coordinates of ``ds``: the columns of ``X`` and ``y``.
    sample_dims : sequence of str
        Dims that index samples; the first one is cut into blocks.
    memory_budget_mb : float
        Memory for the buffer and one block being read [MB of 2**20 bytes].
    required : sequence of str
        Variables that must be finite for a row to be drawn, but are not returned.
    x_normalizer, y_normalizer : Normalizer, optional
        Fitted normalisers applied to each block, in float64 as in the
        in-memory path, before the rows are stored as float32.

    Attributes
    ----------
    blocks : list of (int, int)
        Start and stop of each block along ``sample_dims[0]``.
    capacity : int
        Rows the buffer holds.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"x": (("time", "lat"), np.arange(20.0).reshape(10, 2)),
    ...                  "y": (("time", "lat"), np.ones((10, 2)))}).chunk(time=5)
    >>> sampler = ChunkedSampler(ds, ["x"], ["y"], ["time", "lat"], memory_budget_mb=1)
    >>> sum(len(X) for X, y in sampler.batches(epoch=0, batch_size=8))
    20
    """

    def __init__(
        self,
        ds: xr.Dataset,
        features: Sequence[str],
        targets: Sequence[str],
        sample_dims: Sequence[str],
        memory_budget_mb: float,
        required: Sequence[str] = (),
        x_normalizer: Normalizer | None = None,
        y_normalizer: Normalizer | None = None,
    ) -> None:
        budget = check_memory_budget(memory_budget_mb)
        self.sample_dims = list(sample_dims)
        missing = [d for d in self.sample_dims if d not in ds.dims]
        if not self.sample_dims or missing:
            raise DataError(f"Sample dimensions {missing or self.sample_dims} not found; the dataset has dimensions {list(ds.dims)}.")
        if not features or not targets:
            raise DataError(f"ChunkedSampler needs at least one feature and one target, got features={list(features)} targets={list(targets)}.")
        self.features, self.targets, self.required = list(features), list(targets), list(required)
        self._x = _fields(ds, self.features, self.sample_dims, "Input")
        self._y = _fields(ds, self.targets, self.sample_dims, "Target")
        self._required = _fields(ds, self.required, self.sample_dims, "Required")
        self._sizes = [ds.sizes[d] for d in self.sample_dims]
        self._x_stats = self._statistics(x_normalizer, self.features, "x_normalizer")
        self._y_stats = self._statistics(y_normalizer, self.targets, "y_normalizer")

        # Rows of one step of the block dim, and bytes per row (see the shares above).
        self.row_stride = int(np.prod(self._sizes[1:], dtype=np.int64))
        n_columns = len(self.features) + len(self.targets) + len(self.required)
        block_row_bytes = 16 * n_columns + 16
        # float32 values, the completeness flag and up to three int64 index arrays.
        buffer_row_bytes = 4 * (len(self.features) + len(self.targets)) + 25
        max_steps = int(_BLOCK_SHARE * budget * MIB // (block_row_bytes * self.row_stride))
        if max_steps < 1:
            needed = block_row_bytes * self.row_stride / _BLOCK_SHARE / MIB
            raise ConfigError(
                f"memory_budget_mb={memory_budget_mb!r} is too small: one step of {self.sample_dims[0]!r} "
                f"contains {self.row_stride} samples of {n_columns} columns; raise memory_budget_mb to at least "
                f"{math.ceil(needed * 100) / 100:g} or thin the data."
            )
        self.blocks = self._cut_blocks(max_steps)
        self._chunk_tasks = [self._whole_chunks(field) for field in self._x + self._y + self._required]
        self.capacity = int(_BUFFER_SHARE * budget * MIB // buffer_row_bytes)
        self._largest_block = max(stop - start for start, stop in self.blocks) * self.row_stride
        self.budget_mb = budget
        logger.debug("%d blocks of at most %d rows, buffer of %d rows", len(self.blocks), self._largest_block, self.capacity)

    @staticmethod
    def _statistics(norm: Normalizer | None, names: list[str], argument: str) -> tuple[np.ndarray, np.ndarray] | None:
        if norm is None:
            return None
        if not hasattr(norm, "mean_"):
            raise ValueError(f"{argument} is not fitted; fit it first, for example with fit_normalizers().")
        if list(norm.names_) != names:
            raise ValueError(f"{argument} was fitted on columns {norm.names_}, but the sampler reads {names}.")
        return norm.mean_, norm.scale_

    def _cut_blocks(self, max_steps: int) -> list[tuple[int, int]]:
        # Block edges: every dask chunk edge along the block dim, then pieces of at most max_steps.
        dim, length = self.sample_dims[0], self._sizes[0]
        edges = {0, length}
        for field in self._x + self._y + self._required:
            if dim in field.dims and field.chunks is not None:
                edges.update(np.cumsum(field.chunks[field.dims.index(dim)]).tolist())
        edges = sorted(edges)
        blocks = []
        for start, stop in zip(edges[:-1], edges[1:]):
            pieces = math.ceil((stop - start) / max_steps)
            cuts = np.linspace(start, stop, pieces + 1).round().astype(int)
            blocks += list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))
        return blocks

    def _whole_chunks(self, field: xr.DataArray) -> dict[tuple[int, int], object]:
        """Map (start, stop) of each dask chunk along the block dim to a delayed task that reads it.

        Only for fields with one chunk along their other dims. Slicing the dask
        array per block costs about 25 ms of graph building and optimising
        (dask 2026.8), more than reading a block of a few MB, so blocks that are
        whole chunks use tasks optimised once here.
        """
        dim = self.sample_dims[0]
        if field.chunks is None or dim not in field.dims:
            return {}
        axis = field.dims.index(dim)
        if any(len(c) > 1 for i, c in enumerate(field.chunks) if i != axis):
            return {}
        edges = np.concatenate([[0], np.cumsum(field.chunks[axis])]).tolist()
        tasks = field.data.to_delayed(optimize_graph=True).reshape(-1)
        return {(a, b): task for a, b, task in zip(edges[:-1], edges[1:], tasks)}

    def _check_batch_size(self, batch_size: int) -> None:
        if batch_size < 1 or batch_size > self.capacity - self._largest_block:
            raise ValueError(
                f"batch_size={batch_size} does not fit: the buffer of memory_budget_mb={self.budget_mb:g} has room for "
                f"{self.capacity} rows and a block up to {self._largest_block}; use a batch_size from 1 to "
                f"{max(self.capacity - self._largest_block, 0)} or raise memory_budget_mb."
            )

    def _read(self, block: int, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Read one block into the first rows of ``X`` and ``y``; return its completeness mask."""
        start, stop = self.blocks[block]
        shape = [stop - start, *self._sizes[1:]]
        rows = int(np.prod(shape, dtype=np.int64))
        dim = self.sample_dims[0]
        fields = self._x + self._y + self._required
        tasks, arrays = {}, {}
        for i, field in enumerate(fields):
            if dim not in field.dims:
                arrays[i] = field.data
            elif (start, stop) in self._chunk_tasks[i]:
                tasks[i] = self._chunk_tasks[i][start, stop]
            else:
                arrays[i] = field.isel({dim: slice(start, stop)}).data
        # Computed in this thread: the blocks are small, and a thread pool or a
        # cluster adds more overhead than a block takes to read. NOTE: delayed
        # tasks and arrays go to separate dask.compute calls, because one call
        # with both returned the results out of order with dask 2026.8.
        values: list = [None] * len(fields)
        for group in (tasks, arrays):
            for i, value in zip(group, dask.compute(*group.values(), scheduler="synchronous")):
                values[i] = value

        def expanded(i: int) -> np.ndarray:
            # Insert length-one axes for the sample dims this field lacks, so it broadcasts.
            dims = fields[i].dims
            return np.reshape(values[i], [n if d in dims else 1 for d, n in zip(self.sample_dims, shape)])

        # Completeness per cell, from the raw columns: every feature and required
        # value finite, and at least one target.
        n_x, n_y = len(self._x), len(self._y)
        valid = np.ones(shape, bool)
        any_target = np.zeros(shape, bool)
        for i in range(len(fields)):
            finite = np.isfinite(expanded(i))
            if n_x <= i < n_x + n_y:
                any_target |= finite
            else:
                valid &= finite
        valid &= any_target

        for out, offset, count, stats in ((X, 0, n_x, self._x_stats), (y, n_x, n_y, self._y_stats)):
            grid = out[:rows].reshape(*shape, count)
            for j in range(count):
                column = expanded(offset + j)
                if stats is not None:
                    # float64 as in the in-memory path, then stored as float32.
                    column = (column.astype(np.float64) - stats[0][j]) / stats[1][j]
                grid[..., j] = column
        return valid.reshape(-1)

    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.empty((self.capacity, len(self.features)), np.float32),
            np.empty((self.capacity, len(self.targets)), np.float32),
        )

    def _is_validation(self, block: int, validation_fraction: float, seed: int) -> np.ndarray:
        start, stop = self.blocks[block]
        index = np.arange(start * self.row_stride, stop * self.row_stride, dtype=np.int64)
        return _splitmix64_uniform(index, seed) < validation_fraction

    def batches(
        self, epoch: int, batch_size: int, seed: int = 0, validation_fraction: float = 0.0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the training minibatches of one epoch: ``X`` (batch, feature) and ``y`` (batch, target), float32.

        Every complete row outside the validation part is yielded exactly once.
        A row belongs to the validation part when a hash of its index and
        ``seed`` falls below ``validation_fraction``, so the part does not
        depend on the blocks or the epoch.
        """
        self._check_batch_size(batch_size)
        _check_fraction(validation_fraction)
        rng = np.random.default_rng([seed, epoch])
        X, y = self._buffers()
        filled, keep = 0, []  # rows of the buffer in use; indices of the rows to draw from it
        for block in rng.permutation(len(self.blocks)):
            start, stop = self.blocks[block]
            if filled + (stop - start) * self.row_stride > self.capacity:
                carry_X, carry_y = yield from _drain(X, y, keep, rng, batch_size)
                # Fewer than batch_size rows are carried, and _check_batch_size
                # leaves room for them next to the largest block.
                filled = len(carry_X)
                X[:filled], y[:filled] = carry_X, carry_y
                keep = [np.arange(filled)]
            valid = self._read(int(block), X[filled:], y[filled:])
            if validation_fraction > 0:
                valid &= ~self._is_validation(int(block), validation_fraction, seed)
            keep.append(filled + np.flatnonzero(valid))
            filled += (stop - start) * self.row_stride
        carry_X, carry_y = yield from _drain(X, y, keep, rng, batch_size)
        if len(carry_X):
            yield carry_X, carry_y

    def validation_batches(
        self, batch_size: int, seed: int = 0, validation_fraction: float = 0.1
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the complete rows of the validation part in storage order, ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        _check_fraction(validation_fraction)
        X = np.empty((self._largest_block, len(self.features)), np.float32)
        y = np.empty((self._largest_block, len(self.targets)), np.float32)
        for block in range(len(self.blocks)):
            valid = self._read(block, X, y) & self._is_validation(block, validation_fraction, seed)
            rows = np.flatnonzero(valid)
            for i in range(0, len(rows), batch_size):
                yield np.take(X, rows[i : i + batch_size], axis=0), np.take(y, rows[i : i + batch_size], axis=0)


def _check_fraction(validation_fraction: float) -> None:
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}.")


def _drain(X: np.ndarray, y: np.ndarray, keep: list[np.ndarray], rng: np.random.Generator, batch_size: int):
    """Yield full minibatches of a permutation of rows ``keep``; return the rows left over."""
    order = rng.permutation(np.concatenate(keep)) if keep else np.empty(0, np.int64)
    full = len(order) - len(order) % batch_size
    # np.take gathers rows several times faster than X[rows] (numpy 2.4).
    for i in range(0, full, batch_size):
        rows = order[i : i + batch_size]
        yield np.take(X, rows, axis=0), np.take(y, rows, axis=0)
    return np.take(X, order[full:], axis=0), np.take(y, order[full:], axis=0)


def _evaluate(model: nn.Module, sampler: ChunkedSampler, seed: int, validation_fraction: float) -> tuple[float, int]:
    # Same definition as the in-memory loop: the loss summed over finite
    # target cells, divided by their number.
    import torch

    from condupdate.emulators.training import loss_function

    masked_loss = loss_function(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for X, y in sampler.validation_batches(8192, seed, validation_fraction):
            yb = torch.from_numpy(y)
            n = int(torch.isfinite(yb).sum())
            total += float(masked_loss(model(torch.from_numpy(X)), yb)) * n
            count += n
    model.train(was_training)
    return total / max(count, 1), count


def train_stream(
    model: nn.Module, sampler: ChunkedSampler, config: TrainConfig | None = None, description: str = "training"
) -> TrainHistory:
    """Train ``model`` in place on minibatches from ``sampler``, as :func:`condupdate.emulators.train` does in memory.

    The loss (:func:`condupdate.emulators.training.loss_function`), Adam, early stopping on the validation
    part and the restoring of the best weights are those of the in-memory loop.
    The validation part is drawn by :meth:`ChunkedSampler.batches` from
    ``config.seed`` and ``config.validation_fraction``. Its loss is measured
    after each epoch by a second pass over the blocks, which reads the data
    again. Batches differ from the in-memory loop's, so weights are not
    identical, but both minimise the same loss over the same samples.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(batch, n_inputs)`` to ``(batch, n_outputs)``.
    sampler : ChunkedSampler
        With normalisers, so batches are standardised.
    config : TrainConfig, optional
    description : str
        Label of the progress bar and log lines.

    Returns
    -------
    TrainHistory
    """
    # Imported here so that reading data and configurations does not import torch.
    import torch
    from tqdm.auto import tqdm

    from condupdate.emulators.training import TrainConfig, TrainHistory, loss_function

    config = config or TrainConfig()
    if not isinstance(sampler, ChunkedSampler):
        raise TypeError(f"sampler must be a ChunkedSampler, got {type(sampler).__name__}.")

    masked_loss = loss_function(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history = TrainHistory()
    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    model.train()
    epochs = tqdm(range(config.epochs), desc=description, disable=not config.progress, leave=False)
    for epoch in epochs:
        running, steps = 0.0, 0
        for X, y in sampler.batches(epoch, config.batch_size, config.seed, config.validation_fraction):
            optimizer.zero_grad(set_to_none=True)
            loss = masked_loss(model(torch.from_numpy(X)), torch.from_numpy(y))
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            steps += 1
        if steps == 0:
            raise ValueError(f"No samples to train on in {description!r}: the sampler yields no complete row.")
        history.train_loss.append(running / steps)

        monitored, n_val = (
            _evaluate(model, sampler, config.seed, config.validation_fraction) if config.validation_fraction else (0.0, 0)
        )
        if n_val == 0:
            monitored = history.train_loss[-1]
        history.val_loss.append(monitored)
        epochs.set_postfix(loss=f"{history.train_loss[-1]:.4g}", val=f"{monitored:.4g}")
        if monitored < best_loss:
            best_loss, best_state, stale = monitored, copy.deepcopy(model.state_dict()), 0
            history.best_epoch = epoch
        else:
            stale += 1
            if config.patience and stale >= config.patience:
                logger.info("%s: early stop at epoch %d, best epoch %d", description, epoch, history.best_epoch)
                break

    model.load_state_dict(best_state)
    model.eval()
    return history
