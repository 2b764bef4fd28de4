"""python -m src.eval: a finished run rescored from its final weights reproduces its test results exactly."""
import json
import logging

import pytest
from omegaconf import OmegaConf

from helpers import FAST, compose_cfg
from src.eval import EVAL, evaluate, main

OVERRIDES = [*FAST, "trainer.max_epochs=2", "trainer.enable_checkpointing=true", "case=case1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run dir as `python -m src.train` leaves it: .hydra/config.yaml (the composed config, unresolved, as
    Hydra saves it), checkpoints/last.ckpt and metrics.json."""
    from src.train import train

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(OVERRIDES)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    train(cfg, run_dir)
    return run_dir


def test_eval_reproduces_every_test_field_and_leaves_metrics_json_alone(finished_run, capsys):
    metrics = (finished_run / "metrics.json").read_bytes()
    main([str(finished_run)])
    assert (finished_run / "metrics.json").read_bytes() == metrics
    record, rescored = json.loads(metrics), json.loads((finished_run / EVAL).read_text())
    assert "status" not in rescored
    assert rescored["test_error"] == record["test_error"]
    assert "duration_s" not in rescored and rescored["eval_duration_s"] > 0  # its own time, under its own name
    # Every field the test pass makes, under the same name and with the same value.
    # code_patch: eval.json names eval.code.patch, the rescoring's own patch (when the tree is dirty).
    run_only = {"status", "val_error", "resumed_at_epoch", "train_images_per_s", "duration_s", "git_commit", "code_patch"}
    same = {k: v for k, v in record.items() if k not in run_only}
    assert {k: rescored[k] for k in same} == same
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("eval ") and "wrote" in out[0]


def test_update_adds_only_missing_fields(finished_run, capsys):
    path = finished_run / "metrics.json"
    original = json.loads(path.read_text())
    old = {k: v for k, v in original.items() if k not in ("flops_per_train_image", "test_error_masked")}
    old["test_error"] = 99.0  # an existing field: --update must not touch it
    path.write_text(json.dumps(old))
    try:
        main([str(finished_run), "--update"])
        updated = json.loads(path.read_text())
        assert updated["test_error"] == 99.0
        assert {k: updated[k] for k in old} == old
        assert updated["flops_per_train_image"] == original["flops_per_train_image"]
        assert updated["test_error_masked"] == original["test_error_masked"]
        assert "added to metrics.json: test_error_masked, flops_per_train_image" in capsys.readouterr().out
    finally:
        path.write_text(json.dumps(original, indent=2))


def test_overrides_change_the_rescoring(finished_run):
    logit = evaluate(finished_run, ["eval.inferred_rule=logit"])
    assert logit["inferred_rule"] == "logit"
    assert json.loads((finished_run / "metrics.json").read_text())["inferred_rule"] == "softmax"


@pytest.mark.parametrize("setup, args, message", [
    ("empty", [], "is not a run dir of src.train"),
    ("no_checkpoint", [], "checkpoints/last.ckpt not found"),
    ("run", ["eval.inferred_rul=logit"], "eval.inferred_rul is not a key of the run's config (did you mean eval.inferred_rule?)"),
    ("running", ["--update"], "is not a finished run's record"),
])
def test_bad_input_is_one_line(finished_run, tmp_path, capsys, setup, args, message):
    run_dir = finished_run if setup == "run" else tmp_path
    if setup in ("no_checkpoint", "running"):
        (tmp_path / ".hydra").mkdir()
        (tmp_path / ".hydra" / "config.yaml").write_text((finished_run / ".hydra" / "config.yaml").read_text())
        (tmp_path / "metrics.json").write_text('{"status": "running"}')
    with pytest.raises(SystemExit) as exit_info:
        main([str(run_dir), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / EVAL).exists()


class _Touch:
    """Unpickling it calls ``open(path, "a")``: a checkpoint from elsewhere that creates a file (or runs anything)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "a")


def test_a_checkpoint_that_would_run_code_leaves_no_file_and_is_one_line(finished_run, tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text((finished_run / ".hydra" / "config.yaml").read_text())
    (run / "metrics.json").write_text((finished_run / "metrics.json").read_text())
    checkpoint = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=True)
    touched = tmp_path / "touched"
    checkpoint["hyper_parameters"]["lr_min"] = _Touch(touched)  # beside real weights, where nothing reads it
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main([str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert not touched.exists()
    assert exit_info.value.code == 1 and len(err) == 1, err
    assert "is not a plain checkpoint (io.open)" in err[0]
    assert not (run / EVAL).exists() and not (run / "eval.code.patch").exists()


def test_rescoring_after_the_code_moved_warns_once_and_goes_on(finished_run, capsys, caplog):
    path = finished_run / "metrics.json"
    original = path.read_text()
    path.write_text(json.dumps({**json.loads(original), "git_commit": "0" * 40}))
    try:
        with caplog.at_level(logging.WARNING, logger="src.run.provenance"):
            main([str(finished_run)])
    finally:
        path.write_text(original)
    warnings = [r.getMessage() for r in caplog.records if r.name == "src.run.provenance"]
    assert len(warnings) == 1 and warnings[0].startswith("rescoring ") and "this code is commit" in warnings[0]
    assert "commit 0000000000" in warnings[0] and "\n" not in warnings[0]
    assert capsys.readouterr().out.startswith("eval ")
    assert json.loads((finished_run / EVAL).read_text())["git_commit"] != "0" * 40
