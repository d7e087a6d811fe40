"""Tests of condupdate.jobs.distributed and condupdate.jobs.checkpoint: units on a real LocalCluster, resume, retries."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from condupdate._errors import ConfigError
from condupdate.cli import main
from condupdate.emulators import MLP, TrainConfig, TrainHistory
from condupdate.jobs.checkpoint import Checkpoint, hash_arguments
from condupdate.jobs.config import parse_config
from condupdate.jobs.distributed import UnitFailedError, UnitRunner, local_cluster, open_client
from condupdate.jobs.run import checkpoint_dir, run
from condupdate.update import ConditionalUpdate, load_anomalies
from condupdate.update.conditional import finetune_unit
from condupdate.update.spaces import AllParameters

distributed = pytest.importorskip("distributed")

FINETUNE = TrainConfig(epochs=3, batch_size=16, learning_rate=1e-2, patience=0, seed=0)


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes on the loopback interface, shared by the tests of this module."""
    with local_cluster(2) as local:
        yield local


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, temperature_dataset, write_netcdf) -> Path:
    return write_netcdf(temperature_dataset(), tmp_path_factory.mktemp("data") / "air_temperature.nc")


@pytest.fixture(scope="module")
def serial_update(tiny_file, run_config) -> ConditionalUpdate:
    """Run the tiny configuration in this process, without output files, and return its fitted update."""
    return run(parse_config(run_config([tiny_file]))).update


def _subsets(broken: bool = False) -> list[tuple[str, np.ndarray, np.ndarray]]:
    # Four subsets of a linear problem; with broken=True subset "c" has a NaN input,
    # which train() rejects, as it would reject such data from a user.
    rng = np.random.default_rng(1)
    subsets = []
    for k, label in enumerate("abcd"):
        X = rng.standard_normal((40, 2))
        y = X @ np.array([[1.0 + 0.5 * k], [-1.0]])
        if broken and label == "c":
            X[3, 1] = np.nan
        subsets.append((label, X, y))
    return subsets


def _update() -> ConditionalUpdate:
    return ConditionalUpdate(MLP(2, 1, width=4, depth=1, seed=0), finetune=FINETUNE)


def _anomaly_store(folder: Path) -> xr.DataArray:
    return load_anomalies(folder / "anomalies.nc")


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    checkpoint = Checkpoint(tmp_path / "ckpt", {"config": {"epochs": 3}}).open()
    anomaly = np.random.default_rng(0).standard_normal(17).astype("float32")
    history = TrainHistory(train_loss=[0.5, 0.25], val_loss=[0.6, 0.3], best_epoch=1)
    state = MLP(2, 1, width=3, depth=1, seed=0).state_dict()

    checkpoint.save("fine-tune 1860/member 0", "digest-a", (anomaly, history))
    checkpoint.save("parent", "digest-p", (state, history))
    found, (loaded, loaded_history) = checkpoint.load("fine-tune 1860/member 0", "digest-a")
    _, (loaded_state, _) = checkpoint.load("parent", "digest-p")

    assert found
    assert loaded.dtype == anomaly.dtype
    assert loaded.tobytes() == anomaly.tobytes()
    assert loaded_history == history
    for name, tensor in state.items():
        assert torch.equal(loaded_state[name], tensor), name
    assert checkpoint.load("fine-tune 1860/member 0", "digest-b") == (False, None)
    assert checkpoint.load("fine-tune 1870/member 0", "digest-a") == (False, None)


def test_checkpoint_ignores_partial_write(tmp_path):
    checkpoint = Checkpoint(tmp_path / "ckpt", {"config": 1}).open()
    checkpoint.save("parent", "digest", (np.zeros(3, dtype="float32"), TrainHistory()))
    # What a process killed inside atomic_path leaves: a hidden temporary file.
    (checkpoint.units_dir / ".fine-tune_a.0123.pt.abcd.tmp").write_bytes(b"\x80\x02partial")

    assert len(checkpoint.finished_units()) == 1


def test_checkpoint_rejects_other_configuration(tmp_path):
    Checkpoint(tmp_path / "ckpt", {"config": {"epochs": 3}, "threads": 1}).open()

    with pytest.raises(ConfigError, match=r"another configuration .*differing entries: config\)"):
        Checkpoint(tmp_path / "ckpt", {"config": {"epochs": 4}, "threads": 1}).open()


def test_run_rejects_checkpoint_of_other_configuration(tiny_file, run_config, tmp_path):
    out = tmp_path / "out"
    Checkpoint(checkpoint_dir(out), {"config": {"name": "another run"}}).open()
    config = parse_config(run_config([tiny_file]))

    with pytest.raises(ConfigError, match=re.escape(str(checkpoint_dir(out))) + ".*another configuration"):
        run(config, out_dir=out)

    assert not out.exists()


def test_hash_arguments_follows_values():
    X = np.arange(6.0).reshape(3, 2)
    parent = MLP(2, 1, width=3, depth=1, seed=0)
    base = hash_arguments(finetune_unit, (parent, AllParameters(), X, X[:, :1], FINETUNE, "a"))
    changed = X.copy()
    changed[2, 1] = np.nextafter(changed[2, 1], np.inf)

    assert hash_arguments(finetune_unit, (parent, AllParameters(), X.copy(), X[:, :1], FINETUNE, "a")) == base
    assert hash_arguments(finetune_unit, (parent, AllParameters(), X, X[:, :1], FINETUNE.replace(progress=True), "a")) == base
    assert hash_arguments(finetune_unit, (parent, AllParameters(), changed, X[:, :1], FINETUNE, "a")) != base
    assert hash_arguments(finetune_unit, (parent, AllParameters(), X, X[:, :1], FINETUNE.replace(seed=1), "a")) != base
    relu = MLP(2, 1, width=3, depth=1, seed=0, activation="relu")
    assert hash_arguments(finetune_unit, (relu, AllParameters(), X, X[:, :1], FINETUNE, "a")) != base


def test_hash_arguments_rejects_unknown_type():
    with pytest.raises(TypeError, match="Cannot hash a unit argument of type set"):
        hash_arguments(finetune_unit, ({1, 2},))


# --------------------------------------------------------------------------- #
# Units in process
# --------------------------------------------------------------------------- #


def test_map_units_hook_matches_default_loop():
    default = _update().fit_anomalies(_subsets(), np.arange(4.0))
    runner = UnitRunner()

    hooked = _update().fit_anomalies(_subsets(), np.arange(4.0), map_units=runner.map)

    assert runner.computed_ == 4
    assert hooked.anomalies_.values.tobytes() == default.anomalies_.values.tobytes()
    assert hooked.histories_ == default.histories_


def test_failing_unit_is_retried_and_reported_in_process(tmp_path, caplog):
    runner = UnitRunner(retries=1, checkpoint=Checkpoint(tmp_path / "ckpt", {"problem": "linear"}).open())

    with caplog.at_level(logging.WARNING, logger="condupdate.jobs.distributed"):
        with pytest.raises(UnitFailedError, match=r"1 of 4 units failed after 2 attempt\(s\) each: fine-tune c: ValueError: X contains NaN"):
            _update().fit_anomalies(_subsets(broken=True), np.arange(4.0), map_units=runner.map)

    retries = [r for r in caplog.records if "failed on attempt 1 of 2" in r.getMessage()]
    assert [r.levelno for r in retries] == [logging.WARNING]
    assert runner.computed_ == 3
    assert len(runner.checkpoint.finished_units()) == 3


# --------------------------------------------------------------------------- #
# Units on a LocalCluster
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_cluster_failure_then_rerun_resumes(cluster, tmp_path, caplog):
    reference = _update().fit_anomalies(_subsets(), np.arange(4.0))
    key = {"problem": "linear"}

    with distributed.Client(cluster) as client:
        failing = UnitRunner(client=client, retries=2, checkpoint=Checkpoint(tmp_path / "ckpt", key).open())
        with caplog.at_level(logging.WARNING, logger="condupdate.jobs.distributed"):
            with pytest.raises(UnitFailedError, match=r"fine-tune c: ValueError: X contains NaN") as failed:
                _update().fit_anomalies(_subsets(broken=True), np.arange(4.0), map_units=failing.map)
        rerun = UnitRunner(client=client, checkpoint=Checkpoint(tmp_path / "ckpt", key).open())
        fixed = _update().fit_anomalies(_subsets(), np.arange(4.0), map_units=rerun.map)

    assert list(failed.value.failures) == ["fine-tune c"]
    assert str(tmp_path / "ckpt") in str(failed.value)
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unit fine-tune c failed on attempt")]
    assert len(retries) == 2
    assert failing.computed_ == 3
    assert (rerun.loaded_, rerun.computed_) == (3, 1)
    assert fixed.anomalies_.values.tobytes() == reference.anomalies_.values.tobytes()


def test_local_cluster_workers_keep_dynamic_malloc(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        values = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")

    assert len(values) == 2
    assert set(values.values()) == {None}


@pytest.mark.slow
def test_two_worker_run_matches_serial(serial_update, tiny_file, run_config):
    result = run(parse_config(run_config([tiny_file])), workers=2)

    parallel = result.update.anomalies_
    xr.testing.assert_identical(parallel, serial_update.anomalies_)
    assert parallel.values.tobytes() == serial_update.anomalies_.values.tobytes()
    assert torch.equal(result.update.theta0_, serial_update.theta0_)


@pytest.mark.slow
def test_cli_scheduler_runs_several_configurations(cluster, serial_update, tiny_file, run_config, tmp_path):
    paths = []
    for name in ("tiny", "tiny-copy"):
        raw = run_config([tiny_file])
        raw["name"] = name
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(raw))

    status = main(["run", *map(str, paths), "--out", str(tmp_path / "runs"), "--scheduler", cluster.scheduler_address])

    assert status == 0
    for name in ("tiny", "tiny-copy"):
        # The name changes no result, so both runs match the serial run bit for bit.
        store = _anomaly_store(tmp_path / "runs" / name)
        xr.testing.assert_equal(store, serial_update.anomalies_)
        assert store.values.tobytes() == serial_update.anomalies_.values.tobytes(), name
    # The checkpoints are gone once the results are in place.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny", "tiny-copy"]


def test_cli_rejects_workers_with_scheduler(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", str(tmp_path / "a.yaml"), "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"])

    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_rejects_zero_workers(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "a.yaml"), "--workers", "0"])

    assert "expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_unreachable_scheduler_raises():
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(ConnectionError, match=rf"No dask scheduler responded at 'tcp://127.0.0.1:{port}'"):
        with open_client(scheduler=f"tcp://127.0.0.1:{port}", timeout=1):
            pass


# --------------------------------------------------------------------------- #
# Kill and resume
# --------------------------------------------------------------------------- #


def _poll_units(folder: Path, count: int, proc: subprocess.Popen) -> None:
    # Wait until `count` unit files exist, or the process has ended.
    while proc.poll() is None:
        if folder.is_dir() and sum(1 for p in folder.iterdir() if p.suffix == ".pt" and not p.name.startswith(".")) >= count:
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(tiny_file, run_config, tmp_path, caplog):
    raw = run_config([tiny_file])
    # One subset per year (30 fine-tunes) with more epochs, so the run is still
    # fine-tuning when it is killed.
    raw["subsets"]["size"] = 1
    raw["finetune"].update(epochs=40, patience=0)
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = parse_config(raw)
    out = tmp_path / "out"
    units = checkpoint_dir(out) / "units"
    reference = run(config).update.anomalies_

    proc = subprocess.Popen(
        [sys.executable, "-m", "condupdate", "run", str(path), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    try:
        _poll_units(units, 3, proc)
        assert proc.poll() is None, "the run ended before it could be killed; give it more work"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    finished = len([p for p in units.iterdir() if p.suffix == ".pt" and not p.name.startswith(".")])
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert 3 <= finished < 31

    with caplog.at_level(logging.INFO, logger="condupdate.jobs.run"):
        resumed = run(config, out_dir=out)

    counts = [r.getMessage() for r in caplog.records if "units loaded from checkpoint" in r.getMessage()]
    assert counts == [f"run tiny: {finished} units loaded from checkpoint, {31 - finished} computed"]
    xr.testing.assert_identical(resumed.update.anomalies_, reference)
    assert _anomaly_store(out).values.tobytes() == reference.values.tobytes()
    assert not checkpoint_dir(out).exists()


@pytest.mark.slow
def test_terminated_run_reports_and_leaves_no_partial_output(tiny_file, run_config, tmp_path):
    # Batch schedulers stop a job with SIGTERM: the run must stop like Ctrl-C,
    # remove its hidden output folder and name what a rerun will load.
    raw = run_config([tiny_file])
    raw["subsets"]["size"] = 1
    raw["finetune"].update(epochs=40, patience=0)
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    units = checkpoint_dir(out) / "units"

    proc = subprocess.Popen(
        [sys.executable, "-m", "condupdate", "run", str(path), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    try:
        _poll_units(units, 2, proc)
        assert proc.poll() is None, "the run ended before it could be stopped; give it more work"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()

    assert proc.returncode == 130
    assert f"nothing in {str(out)!r} was changed" in stderr
    assert str(checkpoint_dir(out)) in stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len([p for p in units.iterdir() if p.suffix == ".pt"]) >= 2
