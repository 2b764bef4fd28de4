"""Issue 36 §2, the report's side: a folder holding runs of different sweep commands is flagged, and refused
under --strict; a folder of one command is not."""
from helpers import write_run
from src.report.tables import main

FIRST = ["case={case}", "seed={seed}", "trainer.max_epochs=3"]


def _sweep(sweep, extra=()):
    for case in ("baseline", "case1"):
        for seed in (0, 1):
            overrides = [o.format(case=case, seed=seed) for o in FIRST] + list(extra)
            write_run(sweep, ",".join(overrides), overrides=overrides, dataset="digits", case=case, seed=seed,
                      test_error=2.0 + seed + (case == "case1") + 0.5 * bool(extra))


def test_a_folder_of_two_sweep_commands_is_flagged_and_refused_under_strict(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    _sweep(sweep)
    assert main([str(sweep)]) == 0
    assert "mixed sweep" not in (sweep / "table.md").read_text()  # one command, several jobs: no flag
    assert main([str(sweep), "--strict"]) == 0
    _sweep(sweep, ["optimizer.lr=0.1", "threads=2"])  # the same with optimizer.lr=0.1 (threads: how, not what)
    capsys.readouterr()
    assert main([str(sweep)]) == 0
    md = (sweep / "table.md").read_text()
    assert f"⚠ mixed sweep: `{sweep}` holds runs of 2 different sweep commands (keys overridden: case, optimizer.lr, " \
           "seed, trainer.max_epochs | case, seed, trainer.max_epochs)" in md
    capsys.readouterr()
    assert main([str(sweep), "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --strict: ") and "2 different sweep commands" in err[0]
