"""Command line: ``condupdate demo``, ``condupdate run CONFIG.yaml`` and ``condupdate plot RUN_DIR``."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from condupdate._errors import ConfigError, DataError
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
        description="Validate CONFIG, then train, fine-tune, regress and score, writing results to --out.",
    )
    run.add_argument("config", type=Path, help="YAML configuration file (see the README for its keys)")
    run.add_argument("--out", type=Path, default=None, help="output folder (default: ./runs/NAME, NAME from the configuration)")
    run.add_argument("--overwrite", action="store_true", help="replace results in a non-empty output folder")

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
    return parser


def _report(result) -> str:
    lines = []
    for target, table in result.skill.items():
        units = table.rmse.attrs.get("units", "")
        lines.append(f"Skill on the application selection, {target} [{units}] (area-weighted):")
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

    if args.command == "plot":
        from condupdate.jobs.redraw import redraw

        try:
            paths = redraw(args.run_dir, out=args.out)
        except (DataError, FileNotFoundError, NotADirectoryError) as err:
            print(f"condupdate plot: error: {err}", file=sys.stderr)
            return 2
        print("\n".join(str(path) for path in paths))
        return 0

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

    try:
        if args.command == "demo":
            config = demo_config(quick=args.quick)
            out = args.out
        else:
            config = load_config(args.config)
            out = args.out if args.out is not None else Path("runs") / config.name
        result = run(config, out_dir=out, overwrite=args.overwrite, progress=sys.stderr.isatty())
    except (ConfigError, DataError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        print(f"condupdate {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"condupdate {args.command}: interrupted; earlier results in the output folder are unchanged.", file=sys.stderr)
        return 130
    print(_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
