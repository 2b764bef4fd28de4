"""python -m bench.metrics runs at tiny sizes and reports what docs/performance.md quotes."""
import json
import sys

import numpy as np

from bench import metrics


def test_synthetic_trees_have_seven_levels_and_nest():
    tree = metrics.synthetic_tree(1000)
    assert len(tree.levels) + 1 == 7 and tree.num_classes == 1000
    assert [len(level.group_names) for level in tree.levels] == [250, 62, 16, 4, 2, 2]  # K / 4^i, at least 2
    assert tree.lca_heights.max() <= 7 and tree.lca_heights.dtype == np.uint8  # ClassTree checked the nesting


def test_bench_prints_the_costs_per_tree_size(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench.metrics", "--classes", "40", "120", "--images", "64"])
    metrics.main()
    out = json.loads(capsys.readouterr().out)
    assert [size["classes"] for size in out["sizes"]] == [40, 120] and out["peak_rss_mb"] > 0
    for size in out["sizes"]:
        assert size["lca_dtype"] == "uint8" and size["levels"] == 7 and size["mistake_metrics_ms_per_image"] > 0
        assert {"hierarchy_mean_corr_s", "hierarchy_rf_s", "hierarchy_spearman_s"} <= set(size)
