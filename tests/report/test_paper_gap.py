"""Issue 36 §3: the paper's columns and marker say what a row's runs do differently from its recipe."""
import csv
from pathlib import Path

import yaml

from helpers import write_run
from src.report.figures import deltas_figure
from src.report.paper import PAPER_EPOCHS, PAPER_VAL_SIZE, paper_gap
from src.report.tables import main

RECIPE = Path(__file__).resolve().parents[2] / "conf" / "preset_base" / "paper_recipe.yaml"


def test_the_recipe_constants_are_the_presets():
    recipe = yaml.safe_load(RECIPE.read_text())
    assert (recipe["trainer"]["max_epochs"], recipe["dataset"]["val_size"]) == (PAPER_EPOCHS, PAPER_VAL_SIZE)


def test_paper_gap_names_what_differs():
    assert paper_gap([250, 250], ["0", "0"]) == ""
    assert paper_gap([1, 1], ["0"]) == "1 of 250 epochs"
    assert paper_gap([1, 3], ["0.1"]) == "1/3 of 250 epochs; val_size 0.1 (paper 0)"
    assert paper_gap([], []) == ""  # nothing known: no flag


def _sweep(root: Path, epochs: int) -> Path:
    sweep = root / f"e{epochs}"
    for case, errors in (("baseline", [1.0, 1.2]), ("case1", [0.6, 0.7])):
        for seed, error in enumerate(errors):
            write_run(sweep, f"{case}{seed}", dataset="mnist", case=case, seed=seed, depth=10, epochs=epochs,
                      test_error=error)
    return sweep


def test_a_one_epoch_sweep_has_its_paper_columns_and_marker_flagged(tmp_path):
    short, full = _sweep(tmp_path, 1), _sweep(tmp_path, 250)
    assert main([str(short)]) == 0 and main([str(full)]) == 0
    md = (short / "table.md").read_text()
    assert "| 0.43 ± 0.03 ≠ 1 of 250 epochs | −0.50 ≠ 1 of 250 epochs |" in md
    assert "≠" not in (full / "table.md").read_text()
    with open(short / "table.csv", newline="") as f:
        assert {r["case"]: r["paper_differs"] for r in csv.DictReader(f)} == {"baseline": "1 of 250 epochs",
                                                                              "case1": "1 of 250 epochs"}
    from src.report.tables import group_runs, load_runs, table_rows
    rows = table_rows(group_runs(load_runs([short])))
    texts = [t.get_text() for t in deltas_figure("mnist", 10, "", rows).axes[0].texts]
    assert "paper ≠ 1 of 250 epochs" in texts
