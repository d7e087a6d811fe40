"""Score every weight regressor on the demo's real data with a fine-tuning ensemble.

The parent is trained once and fine-tuned on each decade of 1860-1979 with
``--members`` seeds; every regressor is then fitted to the same anomaly store, so
the comparison isolates the regression. For each regressor one JSON line gives
the RMSE of the deterministic child and, for the member ensemble (one child per
seed) and, where the regressor has a posterior, the posterior ensemble, the RMSE
of the ensemble mean, the CRPS and the spread-skill ratio on 2070-2099 [K, area
weighted]. The parent and pattern scaling are printed once as references.

Usage: python benchmarks/regressor_skill.py [--members 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

from condupdate import skill
from condupdate.cli import demo_config
from condupdate.jobs.config import parse_config
from condupdate.jobs.prepare import prepare, select_split
from condupdate.jobs.run import run
from condupdate.update import REGRESSORS, make_regressor


def _scores(truth, weights, prediction=None, ensemble=None) -> dict[str, float]:
    out = {}
    if prediction is not None:
        out["rmse"] = float(skill.rmse(prediction, truth, weights=weights))
    if ensemble is not None:
        out["ensemble_rmse"] = float(skill.rmse(ensemble.mean("member"), truth, weights=weights))
        out["crps"] = float(skill.crps_ensemble(ensemble, truth, weights=weights))
        out["spread_skill_ratio"] = float(skill.spread_skill_ratio(ensemble, truth, weights=weights))
    return {k: round(v, 4) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5, help="fine-tuning seeds per subset (at least 2)")
    parser.add_argument("--quick", action="store_true", help="the demo's quick settings: thinned grid, few epochs")
    args = parser.parse_args()

    raw = demo_config(quick=args.quick).model_dump(mode="json")
    raw["update"] = {"members": args.members, "ensemble": "members"}
    start = time.perf_counter()
    result = run(parse_config(raw))
    print(json.dumps({"phase": "fine-tuning", "members": args.members, **{k: round(v, 1) for k, v in result.timings.items()}}))

    truth = result.predictions["air_temperature"].truth
    weights = skill.latitude_weights(truth)
    for method in ("parent", "pattern_scaling"):
        print(json.dumps({"method": method, **_scores(truth, weights, result.predictions["air_temperature"][method])}))

    emulator = result.emulator
    update = emulator.update
    apply = select_split(prepare(result.config).dataset, result.config, "apply")
    for name in REGRESSORS:
        tic = time.perf_counter()
        update.regressor = make_regressor(name)
        update.fit_regressor()
        child = emulator.predict(apply).air_temperature
        members = emulator.predict(apply, ensemble="members").air_temperature
        record = {"method": f"child[{name}]", **_scores(truth, weights, child, members)}
        if hasattr(update.regressor_, "sample"):
            posterior = emulator.predict(apply, ensemble="posterior", n_samples=20, random_state=0).air_temperature
            record["posterior"] = _scores(truth, weights, ensemble=posterior)
        record["seconds"] = round(time.perf_counter() - tic, 1)
        print(json.dumps(record), flush=True)
    print(json.dumps({"total_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
