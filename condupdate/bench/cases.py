"""The use cases of the scorecard: one configuration file per case under ``data/configs/``.

Each case is an ordinary run configuration that ``condupdate run`` executes; the
scorecard adds baselines on the same split. ``quick`` contains the overrides of
``condupdate bench --quick`` (fewer epochs, a thinner grid), merged key by key
into the configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CASES", "Case", "configs_dir"]


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # temporal, spatial or cross-domain extrapolation
    config: str  # file name under data/configs/
    quick: dict[str, Any] = field(default_factory=dict)
    # Data packages the case reads that are not project dependencies: the case is
    # skipped with a note, not failed, where one is not installed.
    requires: tuple[tuple[str, str], ...] = ()  # (module, pip install command)


CASES: dict[str, Case] = {
    case.name: case
    for case in [
        Case(
            "warm-future",
            "temporal",
            "warm-future.yaml",
            quick={
                "data": {"thin": {"latitude": 3, "longitude": 3}},
                "training": {"epochs": 8},
                "finetune": {"epochs": 4},
            },
        ),
        Case(
            "scenario-transfer",
            "temporal",
            "scenario-transfer.yaml",
            quick={
                "data": {"thin": {"scenario_year": 2, "latitude": 3, "longitude": 3}},
                "subsets": {"size": 5},  # decades of the thinned, two-yearly axis
                "training": {"epochs": 8},
                "finetune": {"epochs": 4},
            },
        ),
        Case(
            "amoc-tipping",
            "temporal",
            "amoc-tipping.yaml",
            quick={"training": {"epochs": 15}, "finetune": {"epochs": 5}},  # 2500 one-year samples need no thinning
        ),
        Case(
            "deep-density",
            "spatial",
            "deep-density.yaml",
            quick={"data": {"thin": {"lat": 3, "lon": 3}}, "training": {"epochs": 4}, "finetune": {"epochs": 3}},
        ),
        Case(
            "cross-model",
            "cross-domain",
            "cross-model.yaml",
            quick={"data": {"thin": {"time": 5}}, "training": {"epochs": 3}, "finetune": {"epochs": 2}},
            requires=(("esmvaltool_sample_data", "pip install --no-deps esmvaltool-sample-data"),),
        ),
        Case(
            "wind-uncertainty",
            "cross-domain",
            "wind-uncertainty.yaml",
            quick={
                "data": {"thin": {"lat": 4, "lon": 4}},  # 5 x 17 of the 17 x 65 grid points
                "emulator": {"width": 16},
                "training": {"epochs": 4},
                "finetune": {"epochs": 2},
            },
        ),
    ]
}


def configs_dir() -> Path:
    """Return the folder of the case configurations: ``$CONDUPDATE_CONFIGS`` or ``data/configs`` of the source tree."""
    folder = Path(os.environ.get("CONDUPDATE_CONFIGS", Path(__file__).resolve().parents[2] / "data" / "configs"))
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Case configurations folder {str(folder)!r} not found; run from a source checkout of condupdate "
            "or set CONDUPDATE_CONFIGS to the folder holding the case YAML files."
        )
    return folder
