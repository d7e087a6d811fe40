"""Command line: ``condupdate demo``, ``condupdate run CONFIG.yaml``, ``condupdate plot RUN_DIR`` and ``condupdate bench``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from condupdate._errors import CondupdateWarning, ConfigError, DataError
from condupdate.jobs.config import RunConfig, load_config

__all__ = ["main", "demo_config"]

logger = logging.getLogger("condupdate")


def demo_config(quick: bool = False) -> RunConfig:
    """Return the demo configuration; ``quick`` thins the grid and shortens training for tests."""
    with resources.as_file(resources.files("condupdate") / "configs" / "demo.yaml") as path:
        config = load_config(path)
    if not quick:
        return config
    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"thin": {"latitude": 3, "longitude": 3}}),
            "training": config.training.model_copy(update={"epochs": 8}),
            "finetune": config.finetune.model_copy(update={"epochs": 4}),
        }
    )


def _count(minimum: int):
    # An argparse type: a whole number of at least `minimum`.
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condupdate",
        description="Adapt neural climate emulators to out-of-distribution regimes with conditional weight updates.",
    )
    # -v is accepted before and after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps the subcommand's default from overwriting a -v given before it.
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log each subset's fine-tuning and early stops"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each subset's fine-tuning and early stops")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="adapt a temperature emulator from 1860-1979 to 2070-2099 on Met Office model data",
        description=(
            "Train an emulator of annual 1.5 m air temperature [K] (Met Office Unified Model, A1B scenario, "
            "North America, from the iris-sample-data package) on 1860-1979, fine-tune it per decade, regress "
            "the weight anomalies on the domain-mean temperature and apply the child to 2070-2099. "
            "Writes skill.csv, the anomalies, the model and figures."
        ),
    )
    demo.add_argument("--out", default="condupdate-demo", type=Path, help="output folder (default: ./condupdate-demo)")
    demo.add_argument("--quick", action="store_true", help="every third grid point and a few epochs: a smoke test of a few seconds, not a result")
    demo.add_argument("--overwrite", action="store_true", help="replace results in a non-empty output folder")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run the conditional weight update described by a YAML configuration",
        description=(
            "Validate each CONFIG, then train, fine-tune, regress and score, writing results to --out. The parent "
            "training and each fine-tune are units of work: they run in this process, on a local dask cluster "
            "(--workers) or on a running dask scheduler (--scheduler). Each finished unit is saved to OUT.checkpoint "
            "beside the output folder; rerunning the same command resumes from it."
        ),
    )
    run.add_argument("config", type=Path, nargs="+", help="YAML configuration files, run one after another (see the README for their keys)")
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: ./runs/NAME, NAME from the configuration); with several configurations, OUT/NAME for each",
    )
    run.add_argument("--overwrite", action="store_true", help="replace results in a non-empty output folder")
    cluster = run.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers", type=_count(1), default=None, metavar="N", help="start a local dask cluster of N worker processes for the units"
    )
    cluster.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="run the units on the dask scheduler at ADDRESS, e.g. tcp://10.0.0.5:8786"
    )
    run.add_argument(
        "--retries", type=_count(0), default=2, metavar="N", help="extra attempts for a unit that raises (default: 2)"
    )
    run.add_argument(
        "--threads",
        type=_count(1),
        default=1,
        metavar="N",
        help="torch threads inside each unit (default: 1); results are bit-identical between runs with the same value",
    )

    plot = sub.add_parser(
        "plot",
        parents=[common],
        help="redraw the figures of a finished run from its saved outputs, without retraining",
        description=(
            "Read predictions.nc, anomalies.nc, training_history.json, skill.csv, config.yaml and model/ "
            "from RUN_DIR and write every figure as PNG. Nothing is trained. Prints the paths written."
        ),
    )
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="output folder of a finished run or demo")
    plot.add_argument("--out", type=Path, default=None, help="folder for the PNG files, made if missing (default: RUN_DIR)")

    check = sub.add_parser(
        "check",
        parents=[common],
        help="validate a YAML configuration against its input files and print what a run would use, without training",
        description=(
            "Validate CONFIG, open its input files lazily and check coordinates, calendars, masks and the split. "
            "Prints the selections, sample counts, subsets, predictor ranges and network size. Exits 0 when a run "
            "could start and 2 with the error otherwise. Nothing is trained or written."
        ),
    )
    check.add_argument("config", type=Path, help="YAML configuration file (see the README for its keys)")

    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="score the child against every baseline on the use cases, with several seeds",
        description=(
            "Run each use case whose configuration is in data/configs (or $CONDUPDATE_CONFIGS) once per seed, "
            "score parent, child, nearest_finetune, linear_baseline, task_vector and predictor_input on the "
            "application selection, and write bench.csv, summary.csv, gains.csv and figures to --out. "
            "Prints the mean and 90 % bootstrap interval over seeds. Cases without a configuration file are skipped."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="thinner grids and fewer epochs per case: a smoke test, not a result")
    bench.add_argument("--seeds", type=int, default=None, help="runs per case, each with other training and fine-tuning seeds (default: 5, or 2 with --quick)")
    bench.add_argument("--cases", nargs="+", default=None, metavar="NAME", help="cases to run, separated by spaces or commas (default: all registered cases)")
    bench.add_argument("--out", type=Path, default=Path("condupdate-bench"), help="output folder (default: ./condupdate-bench)")
    bench.add_argument("--overwrite", action="store_true", help="replace earlier bench results in a non-empty output folder")
    return parser


def _has_latitude(field) -> bool:
    from condupdate import skill

    try:
        skill.latitude_weights(field)
    except DataError:
        return False
    return True


def _report(result) -> str:
    lines = []
    for target, table in result.skill.items():
        units = table.rmse.attrs.get("units", "")
        # Scores are cos-latitude weighted only where the field has a latitude.
        weighting = " (area-weighted)" if _has_latitude(result.predictions[target].truth) else ""
        lines.append(f"Skill on the application selection, {target} [{units}]{weighting}:")
        lines.append(f"  {'method':<16} {'rmse':>8} {'mae':>8} {'bias':>8}")
        for method in table.method.values:
            row = table.sel({"method": method})
            lines.append(f"  {method:<16} {float(row.rmse):8.3f} {float(row.mae):8.3f} {float(row.bias):8.3f}")
    distance = result.distance
    name = result.emulator.predictors[0]
    first = result.update.anomalies_[name]
    units = first.attrs.get("units", "")
    lines.append(
        f"Predictor {name!r} [{units}]: subsets span {float(first.min()):.4g} .. {float(first.max()):.4g}, "
        f"application samples {distance.attrs.get('application_predictor_range', '?')}; "
        f"extrapolation distance of the application samples beyond the training range: min {float(distance.min()):.2f}, "
        f"mean {float(distance.mean()):.2f}, max {float(distance.max()):.2f} training standard deviations"
    )
    if result.distances is not None:
        per = result.distances.extrapolation_distance.max([d for d in result.distances.extrapolation_distance.dims if d != "predictor"])
        listed = ", ".join(f"{p} {float(v):.2f}" for p, v in zip(per["predictor"].values, per.values, strict=True))
        lines.append(
            f"Largest distance per predictor: {listed}; largest Mahalanobis distance to the training predictors: "
            f"{float(result.distances.mahalanobis_distance.max()):.2f}"
        )
    if "member" in result.update.anomalies_.dims:
        ratio = result.update.signal_to_noise()
        lines.append(
            f"Fine-tuning noise: median signal-to-noise ratio of the anomalies {float(ratio.median()):.2f}; "
            f"{int(result.update.updated_.sum())} of {ratio.size} parameters updated"
        )
    for spec in result.config.data.inputs:
        if spec.name in result.emulator.predictors and spec.variable in result.emulator.targets:
            lines.append(
                f"Note: predictor {spec.name!r} is computed from the target {spec.variable!r}, so every method is "
                "given the application period's large-scale value of the target (a perfect-model setting)."
            )
    lines.append(f"Runtime: {result.timings['total_s']:.1f} s")
    if result.out_dir is not None:
        lines.append(f"Results written to {result.out_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``condupdate`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Batch schedulers stop jobs with SIGTERM: handle it as Ctrl-C, so the
    # hidden output folder is removed and the message names what was kept.
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        with _readable_warnings(args.command):
            return _dispatch(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _readable_warnings(command: str) -> Iterator[None]:
    """Show each condupdate warning once, as one line on stderr, while the command runs.

    Python would print the file, line number and source line of the ``warn`` call,
    which mean nothing to a user of the command line. Other warnings keep Python's
    format, and ``-W`` options or ``PYTHONWARNINGS`` still filter them all.
    """
    show_other = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CondupdateWarning):
            print(f"condupdate {command}: warning: {message} [{category.__name__}]", file=sys.stderr)
        else:
            show_other(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        # Appended, so filters given with -W or PYTHONWARNINGS take precedence.
        warnings.filterwarnings("once", category=CondupdateWarning, append=True)
        warnings.showwarning = show
        yield


def _bench_command(args: argparse.Namespace) -> int:
    from condupdate.bench.scorecard import format_summary, run_bench

    cases = None if args.cases is None else [name for item in args.cases for name in item.split(",") if name]
    try:
        result = run_bench(
            cases, seeds=args.seeds, quick=args.quick, out_dir=args.out, overwrite=args.overwrite,
            report=lambda line: print(line, file=sys.stderr),
        )
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        print(f"condupdate bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("condupdate bench: interrupted; nothing in the output folder was changed.", file=sys.stderr)
        return 130
    print(format_summary(result))
    if not result.rows:
        print("condupdate bench: error: no case ran; nothing was written.", file=sys.stderr)
        return 2
    return 1 if result.failed else 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "plot":
        from condupdate.jobs.redraw import redraw

        try:
            paths = redraw(args.run_dir, out=args.out)
        except (DataError, FileNotFoundError, NotADirectoryError) as err:
            print(f"condupdate plot: error: {err}", file=sys.stderr)
            return 2
        print("\n".join(str(path) for path in paths))
        return 0

    if args.command == "bench":
        return _bench_command(args)

    if args.command == "check":
        from condupdate.jobs.check import check as check_config

        try:
            report = check_config(load_config(args.config))
        except (ConfigError, DataError, FileNotFoundError, NotADirectoryError) as err:
            print(f"condupdate check: error: {err}", file=sys.stderr)
            return 2
        print(report.format())
        return 0

    # Imported here so that --help prints without loading torch.
    from condupdate.jobs.run import run

    if args.command == "run":
        return _run_command(args)
    try:
        config = demo_config(quick=args.quick)
        out = args.out
        result = run(config, out_dir=out, overwrite=args.overwrite, progress=sys.stderr.isatty())
    except (ConfigError, DataError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        print(f"condupdate {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"condupdate {args.command}: interrupted; nothing in the output folder was changed.", file=sys.stderr)
        return 130
    print(_report(result))
    return 0


def _run_command(args: argparse.Namespace) -> int:
    """Run each configuration of ``condupdate run`` in turn, sharing one dask client; return the exit status."""
    if not args.verbose:
        # dask.distributed logs every worker start and stop at INFO; without -v
        # only its warnings are shown. Workers read the variable when they start.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from condupdate.jobs.distributed import UnitFailedError, open_client
    from condupdate.jobs.run import checkpoint_dir, run

    if not args.verbose:
        logging.getLogger("distributed").setLevel(logging.WARNING)

    try:
        configs = [load_config(path) for path in args.config]
    except (ConfigError, FileNotFoundError) as err:
        print(f"condupdate run: error: {err}", file=sys.stderr)
        return 2
    names = [config.name for config in configs]
    if len(configs) > 1 and len(set(names)) < len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        print(
            f"condupdate run: error: configurations share the names {duplicates}, so their results would go to one "
            "folder; give each configuration its own name.",
            file=sys.stderr,
        )
        return 2
    if args.out is None:
        outs = [Path("runs") / name for name in names]
    else:
        outs = [args.out] if len(configs) == 1 else [args.out / name for name in names]

    status = 0
    try:
        with open_client(workers=args.workers, scheduler=args.scheduler) as client:
            for config, out in zip(configs, outs, strict=True):
                try:
                    result = run(
                        config,
                        out_dir=out,
                        overwrite=args.overwrite,
                        progress=sys.stderr.isatty(),
                        client=client,
                        retries=args.retries,
                        threads=args.threads,
                    )
                except (ConfigError, DataError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
                    print(f"condupdate run: error: {config.name}: {err}", file=sys.stderr)
                    status = max(status, 2)
                    continue
                except UnitFailedError as err:
                    print(f"condupdate run: error: {config.name}: {err}", file=sys.stderr)
                    status = max(status, 1)
                    continue
                except KeyboardInterrupt:
                    print(
                        f"condupdate run: interrupted; nothing in {str(out)!r} was changed, and finished "
                        f"units in {str(checkpoint_dir(out))!r} are loaded when the same command runs again.",
                        file=sys.stderr,
                    )
                    return 130
                print(_report(result))
    except ConnectionError as err:
        print(f"condupdate run: error: {err}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
