"""Test-time cost of the hierarchy and mistake metrics at 1,000 and 10,000 classes: ``python -m bench.metrics``.

Synthetic trees of 7 levels (the classes and 6 levels of groups above them, as iNaturalist's species → genus …
kingdom), random logits. Prints one JSON object: per tree size, the seconds and bytes of the tree's one LCA-height
matrix, the mistake metrics (HD@k, severity, level accuracy, CRM, ECE: ``src.evaluation.mistakes``) in milliseconds per test
image, and the once-per-run metrics of the class vectors (ProxyDR's, ``src.evaluation.hierarchy``; the elementwise Spearman,
``src.evaluation.protocols``) in seconds. docs/performance.md gives the figures with the CPU model.
"""
import argparse
import json
import platform
import resource
import time

import numpy as np
import torch

from src.data.tree import ClassTree, Level

GROUP_LEVELS = 6  # above the classes: 7 levels in all


def synthetic_tree(num_classes: int, levels: int = GROUP_LEVELS, seed: int = 0) -> ClassTree:
    """A random tree: level i has about K / 4^i groups (at least 2; the coarsest at least 2), each group a random
    non-empty set of the finer level's groups."""
    rng = np.random.default_rng(seed)
    sizes = [max(2, round(num_classes / 4 ** i)) for i in range(1, levels + 1)]
    table, finer, out = np.arange(num_classes), num_classes, []
    for i, groups in enumerate(sizes):
        groups = min(groups, finer)
        parent = rng.permutation(np.concatenate([np.arange(groups), rng.integers(0, groups, finer - groups)]))
        table = parent[table]
        out.append(Level(f"level{i + 1}", tuple(int(g) for g in table), tuple(f"g{i + 1}_{g}" for g in range(groups))))
        finer = groups
    return ClassTree(f"synthetic{num_classes}", [f"c{c}" for c in range(num_classes)], out)


def _seconds(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def measure(num_classes: int, images: int, seed: int = 0, vectors: bool = True) -> dict:
    from src.evaluation.protocols import hierarchy_spearman
    from src.evaluation.hierarchy import hierarchy_mean_corr, hierarchy_rf
    from src.evaluation.mistakes import mistake_record

    tree = synthetic_tree(num_classes, seed=seed)
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(images, num_classes, generator=g)
    label = torch.randint(0, num_classes, (images,), generator=g)
    build, heights = _seconds(lambda: tree.lca_heights)
    mistakes, _ = _seconds(mistake_record, logits, label, tree)
    out = {"classes": num_classes, "levels": len(tree.levels) + 1, "images": images,
           "lca_matrix_s": round(build, 3), "lca_matrix_mb": round(heights.nbytes / 2**20, 1),
           "lca_dtype": str(heights.dtype), "mistake_metrics_ms_per_image": round(1000 * mistakes / images, 3)}
    if vectors:
        w = torch.randn(num_classes, 128, generator=g).numpy()
        for name, fn in (("hierarchy_mean_corr_s", hierarchy_mean_corr), ("hierarchy_rf_s", hierarchy_rf),
                         ("hierarchy_spearman_s", hierarchy_spearman)):
            out[name] = round(_seconds(fn, w, tree)[0], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--images", type=int, default=2048, help="test images scored per tree size")
    parser.add_argument("--no-vectors", action="store_true", help="skip the once-per-run class-vector metrics")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [measure(k, args.images, vectors=not args.no_vectors) for k in args.classes]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"cpu": _cpu_model(), "threads": args.threads, "sizes": sizes,
                      "peak_rss_mb": round(peak)}, indent=1))


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


if __name__ == "__main__":
    main()
