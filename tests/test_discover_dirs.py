"""python -m src.discover on a dir that holds runs (outputs/runs, a sweep dir) lists them."""
import pytest

from src.discover import main


def test_a_dir_of_runs_lists_them_and_asks_for_one(tmp_path, capsys):
    runs = [tmp_path / "case=case1,seed=0", tmp_path / "case=case1,seed=1"]
    for run in runs:
        run.mkdir()
        (run / "hierarchy.npz").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--k", "2"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path} holds 2 runs, not one: pass one of them as RUN_DIR:", *(f"  {r}" for r in runs)]
