"""Units of work of a run, spread over dask.distributed workers, checkpointed and retried.

A run's independent work comes in units: the parent training, then one
fine-tune per (subset, member). A unit is a module-level function called with
picklable arguments (a network, arrays, a :class:`TrainConfig`, a seed), so it
runs the same in this process or on any worker. :class:`UnitRunner` runs a list
of units and returns their results in order. It runs them in process or on a
dask cluster, loads finished units from a :class:`Checkpoint`, saves each new
result as soon as it arrives, and retries a unit that raises.

Each unit runs with a fixed number of torch threads (``threads``, default 1),
set inside the unit, because the thread count decides how torch splits some
reductions. With the same threads, seeds and data a unit then returns the same
bits whichever process runs it.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from condupdate.emulators.training import TrainConfig, TrainHistory, train
from condupdate.jobs.checkpoint import Checkpoint, hash_arguments

__all__ = ["UnitFailedError", "UnitRunner", "check_cluster_options", "local_cluster", "open_client", "train_unit"]

logger = logging.getLogger(__name__)

# A unit as fit_anomalies and UnitRunner.map pass it: (name, function, args).
Task = tuple[str, Callable[..., Any], tuple]


class UnitFailedError(RuntimeError):
    """One or more units raised on every attempt.

    Attributes
    ----------
    failures : dict of str to str
        Unit name to the last error, as ``"TypeName: message"``.
    """

    def __init__(self, failures: dict[str, str], n_units: int, attempts: int, checkpoint: Path | None) -> None:
        self.failures = dict(failures)
        listed = "; ".join(f"{name}: {error}" for name, error in self.failures.items())
        kept = (
            f" The finished units are saved in {str(checkpoint)!r}; fix the cause and rerun the same command "
            "to compute only the failed units."
            if checkpoint is not None
            else ""
        )
        super().__init__(f"{len(self.failures)} of {n_units} units failed after {attempts} attempt(s) each: {listed}.{kept}")


def train_unit(model: nn.Module, X: np.ndarray, y: np.ndarray, config: TrainConfig, description: str) -> tuple[dict[str, torch.Tensor], TrainHistory]:
    """Train a copy of ``model`` with :func:`condupdate.emulators.train` and return its state dict and history.

    ``model`` itself is not modified, so the unit gives the same result however
    often it runs.
    """
    trained = copy.deepcopy(model)
    history = train(trained, X, y, config, description=description)
    return trained.state_dict(), history


def _call_unit(function: Callable[..., Any], args: tuple, threads: int) -> Any:
    # Runs in the process that computes the unit: a dask worker or this one.
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(previous)


def _format_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def check_cluster_options(workers: int | None, scheduler: str | None) -> None:
    """Raise ValueError unless ``workers`` is None or a positive int, and at most one of the two is given."""
    if workers is not None and scheduler is not None:
        raise ValueError(
            f"Give either workers ({workers!r}) or scheduler ({scheduler!r}), not both: workers starts a local "
            "cluster, scheduler uses a running one."
        )
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive number of worker processes, got {workers!r}.")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ValueError(f"scheduler must be an address such as 'tcp://127.0.0.1:8786', got {scheduler!r}.")


def local_cluster(workers: int) -> Any:
    """Start a dask ``LocalCluster`` of ``workers`` processes on 127.0.0.1, one thread each, for units.

    The dashboard listens on a free port, because the default 8787 may belong to
    another cluster. Call ``close()`` on the result, or use it in a ``with`` block.
    """
    import dask
    from distributed import LocalCluster

    check_cluster_options(workers, None)
    # dask starts workers with MALLOC_TRIM_THRESHOLD_=65536 (its config key
    # distributed.nanny.pre-spawn-environ). Setting it turns off glibc's dynamic
    # mmap threshold (see mallopt(3)), so torch's tensors above 128 KiB become
    # fresh mappings whose pages the kernel zeroes on every allocation. A
    # fine-tune then took twice the CPU time it takes in this process
    # (distributed 2026.8.0, torch 2.13, CPU), so the workers start without it.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    # Processes, not threads: torch releases the GIL only in parts of training,
    # and separate processes keep each unit's torch thread setting its own.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        )


@contextlib.contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None, timeout: float = 30.0) -> Iterator[Any]:
    """Yield a dask.distributed Client for ``workers`` local processes or a running ``scheduler``, else None.

    Parameters
    ----------
    workers : int, optional
        Start a ``LocalCluster`` of this many worker processes on 127.0.0.1 with
        one thread each. It is closed when the block ends.
    scheduler : str, optional
        Address of a running scheduler, for example ``tcp://10.0.0.5:8786`` from
        dask-jobqueue. The scheduler and its workers stay up when the block ends.
    timeout : float
        Time to wait for the scheduler to respond [s].

    Raises
    ------
    ValueError
        If both or an invalid ``workers`` are given.
    ConnectionError
        If no scheduler responds at ``scheduler`` within ``timeout``.
    """
    check_cluster_options(workers, scheduler)
    if workers is None and scheduler is None:
        yield None
        return

    from distributed import Client

    # set_as_default=False: only units go to the cluster, and lazy xarray data are
    # still computed in this process as in a serial run. Computed on the cluster,
    # the same reductions gave predictors that differed in the last bits.
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as err:
            raise ConnectionError(
                f"No dask scheduler responded at {scheduler!r} within {timeout:g} s ({err}). Start one (for example "
                "with dask-jobqueue or `dask scheduler`) and pass the address it prints."
            ) from err
        with client:
            yield client
        return

    cluster = local_cluster(workers)
    with cluster, Client(cluster, set_as_default=False) as client:
        logger.info(
            "started a LocalCluster of %d worker processes at %s, dashboard %s",
            workers,
            cluster.scheduler_address,
            cluster.dashboard_link,
        )
        yield client


class UnitRunner:
    """Run units of work in process or on a dask cluster, with checkpoints and retries.

    Parameters
    ----------
    client : distributed.Client, optional
        Submit units to this client's cluster; default: run them in this process.
    connect : callable, optional
        Called without arguments when the first unit needs computing, and
        returns the client to use, for example to start a cluster only when needed.
    retries : int, default 2
        Extra attempts for a unit that raises, so a unit runs at most
        ``retries + 1`` times.
    threads : int, default 1
        torch threads inside each unit. Results are reproducible bit for bit
        between runs with the same value.
    progress : bool
        Show a progress bar of finished units.
    checkpoint : Checkpoint, optional
        Load finished units from it and save each new result to it.

    Attributes
    ----------
    loaded_, computed_ : int
        Units loaded from the checkpoint and units computed, over all calls of :meth:`map`.
    """

    def __init__(
        self,
        client: Any = None,
        connect: Callable[[], Any] | None = None,
        retries: int = 2,
        threads: int = 1,
        progress: bool = False,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}.")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive number of torch threads per unit, got {threads!r}.")
        self.client = client
        self.connect = connect
        self.retries = retries
        self.threads = threads
        self.progress = progress
        self.checkpoint = checkpoint
        self.loaded_ = 0
        self.computed_ = 0

    def train(self, model: nn.Module, X: np.ndarray, y: np.ndarray, config: TrainConfig, description: str) -> TrainHistory:
        """Train ``model`` in place as one unit named ``description`` and return its history."""
        state, history = self.map([(description, train_unit, (model, X, y, config, description))])[0]
        model.load_state_dict(state)
        model.eval()
        return history

    def map(self, tasks: Sequence[Task]) -> list[Any]:
        """Run each ``(name, function, args)`` and return ``function(*args)`` of each, in order.

        Finished units are taken from the checkpoint when their arguments are
        unchanged. Every new result is saved to the checkpoint as soon as it
        arrives, so units that finish are kept even when others fail.

        Raises
        ------
        UnitFailedError
            After every other unit has finished, if any unit raised on each of its attempts.
        """
        counts = collections.Counter(name for name, _, _ in tasks)
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"Unit names must be unique, got duplicates {duplicates}.")

        # Phase 1: load the units that the checkpoint contains.
        start = time.perf_counter()
        results: list[Any] = [None] * len(tasks)
        digests = [hash_arguments(function, args) if self.checkpoint is not None else "" for _, function, args in tasks]
        pending = []
        for index, (name, _, _) in enumerate(tasks):
            found = False
            if self.checkpoint is not None:
                found, results[index] = self.checkpoint.load(name, digests[index])
            if not found:
                pending.append(index)
        loaded = len(tasks) - len(pending)

        # Phase 2: compute the rest, saving each result as it arrives.
        bar = tqdm(total=len(tasks), initial=loaded, desc="units", unit="unit", disable=not self.progress)
        failures: dict[str, str] = {}

        def finish(index: int, result: Any) -> None:
            results[index] = result
            if self.checkpoint is not None:
                self.checkpoint.save(tasks[index][0], digests[index], result)
            bar.update(1)

        if pending and self.client is None and self.connect is not None:
            self.client, self.connect = self.connect(), None
        with bar:
            if self.client is None:
                self._run_here(tasks, pending, finish, failures)
            else:
                self._run_on_cluster(tasks, pending, finish, failures)

        computed = len(pending) - len(failures)
        self.loaded_ += loaded
        self.computed_ += computed
        logger.info(
            "units: %d loaded from checkpoint, %d computed, %d failed (%.1f s)",
            loaded,
            computed,
            len(failures),
            time.perf_counter() - start,
        )
        if failures:
            raise UnitFailedError(failures, len(tasks), self.retries + 1, self.checkpoint.path if self.checkpoint else None)
        return results

    def _retry(self, name: str, attempt: int, err: BaseException | str) -> bool:
        # Log the failed attempt and return whether another attempt follows.
        error = err if isinstance(err, str) else _format_error(err)
        if attempt <= self.retries:
            logger.warning("unit %s failed on attempt %d of %d (%s); retrying", name, attempt, self.retries + 1, error)
            return True
        logger.error("unit %s failed on all %d attempts: %s", name, self.retries + 1, error)
        return False

    def _run_here(self, tasks, pending, finish, failures) -> None:
        for index in pending:
            name, function, args = tasks[index]
            for attempt in range(1, self.retries + 2):
                try:
                    result = _call_unit(function, args, self.threads)
                except Exception as err:  # noqa: BLE001 - a unit's error is reported, the other units go on
                    if not self._retry(name, attempt, err):
                        failures[name] = _format_error(err)
                    continue
                finish(index, result)
                break

    def _run_on_cluster(self, tasks, pending, finish, failures) -> None:
        from distributed import as_completed

        def submit(index: int):
            name, function, args = tasks[index]
            # pure=False: a retry must run again rather than reuse the failed result.
            return self.client.submit(_call_unit, function, args, self.threads, pure=False, key=f"unit-{index}-{time.time_ns()}")

        futures = {submit(index): index for index in pending}
        attempts = dict.fromkeys(pending, 1)
        # The loop is given because the client need not be the default client.
        running = as_completed(list(futures), loop=self.client.loop)
        for future in running:
            index = futures.pop(future)
            name = tasks[index][0]
            if future.status == "finished":
                finish(index, future.result())
            else:
                # "error" carries the unit's exception; "cancelled" means the
                # cluster dropped the unit, for example when a worker died.
                err = future.exception() if future.status == "error" else f"unit cancelled ({future.status})"
                if self._retry(name, attempts[index], err):
                    attempts[index] += 1
                    retry = submit(index)
                    futures[retry] = index
                    running.add(retry)
                else:
                    failures[name] = err if isinstance(err, str) else _format_error(err)
            future.release()
