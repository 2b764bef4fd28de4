"""The benchmarks run (tiny sizes) and summarise their alternating rounds by the median ratio."""
import json
import sys

import pytest

from bench.common import ratio_summary


def test_ratio_summary_is_the_median_of_the_rounds_and_its_extremes():
    summary = ratio_summary([1.0, 0.5, 10.0, 1.25, 0.75])  # sorted: 0.5 0.75 1.0 1.25 10 -> median 1.0
    assert (summary["ratio"], summary["ratio_min"], summary["ratio_max"], summary["rounds"]) == (1.0, 0.5, 10.0, 5)
    assert ratio_summary([1.0, 2.0])["ratio"] == 1.5


def run_bench(module, argv, monkeypatch, capsys) -> dict:
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    module.main()
    out = capsys.readouterr().out  # a progress bar may come first: the record is the last JSON object
    return json.loads(out[out.rindex("\n{") if "\n{" in out else 0:])


def test_data_bench_alternates_rounds_and_reports_the_median(monkeypatch, capsys):
    from bench import data

    out = run_bench(data, ["--num-images", "256", "--workers", "0", "--rounds", "3"], monkeypatch, capsys)
    assert out["rounds"] == 3 and len(out["ratio_by_round"]) == 3
    assert out["ratio_min"] <= out["ratio"] <= out["ratio_max"] and out["ratio"] > 0


@pytest.mark.slow
def test_parity_bench_alternates_rounds_and_reports_the_median(monkeypatch, capsys):
    from bench import parity

    out = run_bench(parity, ["--shape", "mnist", "--num-train", "256", "--epochs", "2", "--rounds", "2"],
                    monkeypatch, capsys)
    assert out["rounds"] == 2 and out["ratio_min"] <= out["ratio"] <= out["ratio_max"]
    assert out["ratio"] == pytest.approx(sum(out["ratio_by_round"]) / 2, abs=1e-3)
