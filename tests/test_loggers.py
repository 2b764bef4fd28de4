"""logger=csv|mlflow|wandb: each run is readable by the logger's own tools, metrics and hyperparameters."""
import csv
import importlib.util

import pytest

from helpers import FAST

RUN = [*FAST, "trainer.max_epochs=2", "case=case1", "seed=3"]


def test_csv_logger_writes_metrics_and_hparams_lightning_reads_back(run_train, tmp_path):
    from pytorch_lightning.core.saving import load_hparams_from_yaml

    record = run_train(*RUN, "logger=csv")
    run_dir = tmp_path / "run"
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    epochs = [r for r in rows if r.get("train/loss")]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    final = [r for r in rows if r.get("hparams/test_error")]
    assert float(final[-1]["hparams/test_error"]) == pytest.approx(record["test_error"], rel=1e-6)
    hparams = load_hparams_from_yaml(str(run_dir / "csv" / "hparams.yaml"))
    assert (hparams["seed"], hparams["case"]["name"], hparams["trainer"]["max_epochs"]) == (3, "case1", 2)
    assert not (run_dir / "tb").exists()


def test_mlflow_logger_writes_a_local_file_store_mlflow_reads_back(run_train, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    record = run_train(*RUN, "logger=mlflow", f"logger.save_dir={store}")
    client = MlflowClient(tracking_uri=f"file:{store}")
    experiment = client.get_experiment_by_name("hal")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run"  # the run dir's name
    assert run.info.status == "FINISHED"
    assert (run.data.params["seed"], run.data.params["case/name"], run.data.params["trainer/max_epochs"]) == \
        ("3", "case1", "2")
    assert run.data.metrics["hparams/test_error"] == pytest.approx(record["test_error"], rel=1e-6)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == 2


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is an optional extra (pip install -e '.[wandb]')")
def test_wandb_logger_runs_offline_one_wandb_run_per_job(run_train, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    for job in ("a", "b"):  # two jobs in one process, as in a local sweep
        record = run_train(*RUN, "logger=wandb", run_dir=tmp_path / job)
        runs = list((tmp_path / job / "wandb").glob("offline-run-*"))
        assert record["status"] == "finished" and len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
        assert wandb.run is None  # finished: the next job starts its own run
