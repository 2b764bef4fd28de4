"""Damaged resume state: metrics.json and last.ckpt that cannot be read are moved aside, not fatal."""
import json
import logging

import pytest
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from src.run.records import read_record, record_failure, write_atomic, write_json
from src.run.resume import LAST_CHECKPOINT, usable_checkpoint


@pytest.mark.parametrize("content", [b'{"status": "fini', b"[1, 2]", b'"finished"', b"\x80\x04\x95\xff\x00binary",
                                     b""])
def test_a_damaged_record_is_moved_aside_with_one_warning(tmp_path, caplog, content):
    (tmp_path / "metrics.json").write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert read_record(tmp_path) == {}
    assert not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "metrics.json.corrupt").read_bytes() == content
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "metrics.json" in line and "\n" not in line


def test_a_good_record_reads_back(tmp_path):
    write_json(tmp_path / "metrics.json", {"status": "finished", "test_error": 1.5})
    assert read_record(tmp_path) == {"status": "finished", "test_error": 1.5}
    assert read_record(tmp_path / "missing") == {}


def test_record_failure_survives_a_damaged_record(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    cfg = OmegaConf.create({"dataset": {"name": "digits"}, "seed": 3})
    record = record_failure(tmp_path, RuntimeError("boom"), cfg)
    assert record["status"] == "failed" and record["seed"] == 3 and record["dataset"] == "digits"
    assert json.loads((tmp_path / "metrics.json").read_text())["error"] == "RuntimeError: boom"
    assert (tmp_path / "metrics.json.corrupt").read_text() == "{not json"


def save_checkpoint(run_dir):
    path = run_dir / LAST_CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.arange(10000.0)}, "epoch": 3}, path)
    return path


def test_a_good_checkpoint_is_used(tmp_path):
    path = save_checkpoint(tmp_path)
    assert usable_checkpoint(tmp_path) == str(path)
    assert usable_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_checkpoint_is_moved_aside_with_one_warning(tmp_path, caplog, damage):
    path = save_checkpoint(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":  # one byte inside the tensor data: only the zip's CRC sees it
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
    else:
        data = b"not a checkpoint at all"
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        assert usable_checkpoint(tmp_path) is None
    assert not path.exists() and path.with_name("last.ckpt.corrupt").read_bytes() == data
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "last.ckpt" in line and "\n" not in line


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    write_json(tmp_path / "metrics.json", {"status": "running"})
    write_atomic(tmp_path / "history.csv", lambda f: f.write("epoch\n"))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    write_json(tmp_path / "metrics.json", {"status": "running"})
    assert read_record(tmp_path) == {"status": "running"}
