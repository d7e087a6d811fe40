"""Every notebook runs top to bottom in quick mode and matches the command-line run."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from condupdate._errors import ExtrapolationWarning

pytest.importorskip("iris_sample_data")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def _execute(path: Path, workdir: Path, extra: str = "") -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    # Injected after the parameters cell, as papermill does.
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(f"quick = True\nworkdir = {str(workdir)!r}"))
    if extra:
        notebook.cells.append(nbformat.v4.new_code_cell(extra))
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def test_notebooks_have_parameters_cell():
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name


def test_notebooks_stored_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], path.name
                assert cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, tmp_path):
    notebook = _execute(path, tmp_path)
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []


def test_quickstart_matches_command_line_run(tmp_path):
    from condupdate.cli import demo_config
    from condupdate.jobs.run import run

    save = 'import json\njson.dump(result.skill["air_temperature"].rmse.values.tolist(), open("rmse.json", "w"))'
    _execute(NOTEBOOKS[0], tmp_path, extra=save)
    from_notebook = json.loads((tmp_path / "rmse.json").read_text())

    # The demo applies the child far beyond the training range on purpose.
    with pytest.warns(ExtrapolationWarning, match="'domain_mean_temperature'"):
        from_run = run(demo_config(quick=True)).skill["air_temperature"].rmse.values
    np.testing.assert_array_equal(np.asarray(from_notebook), from_run)


def test_uncertainty_matches_command_line_run(tmp_path):
    from condupdate.cli import demo_config
    from condupdate.jobs.config import parse_config
    from condupdate.jobs.run import run

    save = 'import json\njson.dump(result.ensemble_skill["air_temperature"].crps.values.tolist(), open("crps.json", "w"))'
    path = next(p for p in NOTEBOOKS if p.stem == "04-uncertainty")
    _execute(path, tmp_path, extra=save)
    from_notebook = json.loads((tmp_path / "crps.json").read_text())

    raw = demo_config(quick=True).model_dump(mode="json")
    raw["regressor"] = {"method": "spline"}
    raw["update"] = {"members": 5, "ensemble": "members"}
    with pytest.warns(ExtrapolationWarning, match="'domain_mean_temperature'"):
        from_run = run(parse_config(raw)).ensemble_skill["air_temperature"].crps.values
    np.testing.assert_array_equal(np.asarray(from_notebook), from_run)
