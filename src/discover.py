"""Superclass discovery: ``python -m src.discover RUN_DIR --k K``.

Derives K superclasses from a finished run, from its validation data and its weights only (never the
test set), in two ways:

- ``confusion``: hierarchical clustering of the validation confusion matrix. Classes the network
  takes for each other are close ("Do CNNs learn class hierarchy?", Alsallakh et al. 2017).
- ``vectors``: hierarchical clustering of the class representatives, the rows of the final linear
  layer, by cosine distance (ProxyDR, UPGMA trees over learned class representatives).

Each result is written as a YAML mapping that trains directly (``case=custom case.file=PATH``), and
compared with every Table 1 case by the adjusted Rand index.

Every run leaves what this needs in ``RUN_DIR/hierarchy.npz`` (``src.evaluation.callbacks.DiscoveryInputs``).
"""
import argparse
import shlex
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import yaml
from scipy.cluster.hierarchy import cut_tree, linkage
from scipy.spatial.distance import pdist, squareform
from sklearn.metrics import adjusted_rand_score

from src.data.superclasses import superclass_table
from src.data.superclasses import CASES, PAPER_CASES
from src.run.console import python_command
from src.run.errors import UserError, exit_code

FILE = "hierarchy.npz"
METHODS = ("confusion", "vectors")
LINKAGES = ("average", "complete", "single", "weighted")  # those valid on non-Euclidean distances


class DiscoveryError(UserError):
    """Discovery cannot run on this input."""


NO_VALIDATION = ("has no validation predictions (dataset.val_size=0); the confusion method uses validation data "
                 "only, never the test set")


# --- what a run leaves behind (src.evaluation.callbacks.DiscoveryInputs writes it) -----------------------------

def load_discovery_inputs(run_dir: Path) -> dict:
    path = Path(run_dir) / FILE
    if not Path(run_dir).is_dir():
        raise DiscoveryError(f"{run_dir} is not a run directory")
    if not path.exists():
        runs = sorted(p.parent for p in Path(run_dir).glob(f"**/{FILE}"))
        if runs:  # a sweep dir or outputs/runs: it wants one of them
            raise DiscoveryError(f"{run_dir} holds {len(runs)} runs, not one: pass one of them as RUN_DIR:\n"
                                 + "\n".join(f"  {r}" for r in runs))
        raise DiscoveryError(f"{path} not found: discovery needs a run that finished with this version of src.train")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {key: f[key] for key in f.files}
        for key in ("dataset", "case", "protocol"):
            data[key] = str(data[key])
        data["class_names"] = [str(c) for c in data["class_names"]]
        data["superclasses"] = data["superclasses"].tolist() or None
        if "case_names" in data:
            data["cases"] = dict(zip((str(c) for c in data["case_names"]), data["case_tables"].tolist()))
        else:  # written before the file listed its cases: the paper's, where the dataset has them
            data["cases"] = {c: superclass_table(data["dataset"], c) for c in CASES} \
                if data["dataset"] in PAPER_CASES else {}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        # A truncated or overwritten file (np.load: BadZipFile, EOFError, ValueError, "Failed to interpret")
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DiscoveryError(f"{path} is damaged ({reason}); re-run the training job: delete its metrics.json, "
                             "then the same command") from None
    return data


# --- clustering -----------------------------------------------------------------------------------

def confusion_distances(confusion: np.ndarray) -> np.ndarray:
    """1 − the symmetrised confusion rate: classes often taken for each other are close.

    Rows are normalised first, so that a class's share of mistakes does not depend on how many
    validation images it has.
    """
    c = np.asarray(confusion, dtype=np.float64)
    rates = c / np.maximum(c.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    distances = 1 - (rates + rates.T) / 2
    np.fill_diagonal(distances, 0)
    return distances


def vector_distances(class_vectors: np.ndarray) -> np.ndarray:
    """Cosine distances between class representatives (rows of the final linear layer)."""
    return squareform(pdist(np.asarray(class_vectors, dtype=np.float64), "cosine"))


def canonical(labels: Sequence[int]) -> list[int]:
    """Renumber clusters by their smallest class: the same partition always reads the same."""
    ids: dict[int, int] = {}
    return [ids.setdefault(int(label), len(ids)) for label in labels]


def cluster(distances: np.ndarray, k: int, method: str = "average") -> list[int]:
    """Class -> superclass table with exactly k superclasses, from an agglomerative tree cut."""
    if method not in LINKAGES:
        raise DiscoveryError(f"unknown linkage '{method}'; choose one of {list(LINKAGES)}")
    n = len(distances)
    if not 2 <= k <= n:
        raise DiscoveryError(f"--k must be between 2 and the number of classes ({n}), got {k}")
    tree = linkage(squareform(distances, checks=False), method=method)
    return canonical(cut_tree(tree, n_clusters=k).ravel())


def agreement(table: Sequence[int], cases: dict[str, Sequence[int]], own: Optional[Sequence[int]] = None,
              own_case: str = "") -> dict[str, float]:
    """Adjusted Rand index of ``table`` with every named case of the run's dataset, ``cases`` {name: table} (the
    run's ``hierarchy.npz`` lists them), and a custom run's own."""
    out = {case: float(adjusted_rand_score(t, table)) for case, t in cases.items()}
    if own is not None and own_case not in out:
        out[own_case or "run"] = float(adjusted_rand_score(own, table))
    return out


# --- CLI ------------------------------------------------------------------------------------------

def write_mapping(path: Path, table: Sequence[int], class_names: Sequence[str], header: Sequence[str]) -> None:
    """YAML {superclass: [class names]} as ``case=custom case.file=PATH`` reads it (indices if names repeat)."""
    members = list(class_names) if len(set(class_names)) == len(class_names) else list(range(len(table)))
    groups = {f"s{s}": [members[c] for c in range(len(table)) if table[c] == s] for s in range(max(table) + 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"# {line}\n" for line in header) + yaml.safe_dump(groups, sort_keys=False))


def train_command(run_dir: Path, dataset: str, mapping: Path) -> str:
    """The command that trains on ``mapping``: the run's dataset, and for ``folder`` its images (from the
    run's ``.hydra/config.yaml``; a placeholder where that is missing)."""
    args = [f"dataset={dataset}", "case=custom", _override("case.file", mapping)]
    if dataset == "folder":
        root = (_saved_config(run_dir).get("dataset") or {}).get("root")
        args.insert(1, _override("dataset.root", root) if root else "dataset.root=PATH/TO/IMAGES")
    return f"{python_command()} -m src.train " + " ".join(args)


def _override(key: str, value) -> str:
    """``key=value`` for Hydra on a shell line; quoted where Hydra would misread it (a sweep's job dir holds
    ``=`` and ``,``: ``.../case=case1,seed=0/...``)."""
    value = str(value)
    if all(c.isalnum() or c in "/._-" for c in value):
        return f"{key}={value}"
    return shlex.quote(f"{key}=" + '"' + value.replace('"', '\\"') + '"')


def _saved_config(run_dir: Path) -> dict:
    path = Path(run_dir) / ".hydra" / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text()) if path.exists() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        config = None
    return config if isinstance(config, dict) else {}


def discover(run_dir: Path, k: int, methods: Optional[Sequence[str]] = None, confusion: str = "soft",
             method: str = "average", out_dir: Optional[Path] = None) -> dict[str, dict]:
    """Run discovery; write one mapping file per method; return {method: {table, ari, file, source}}.

    ``methods=None``: both, or ``vectors`` alone when the run has no validation data (the result then has
    no ``confusion``). Asking for ``confusion`` on such a run is an error.
    """
    if confusion not in ("soft", "hard"):
        raise DiscoveryError(f"confusion must be soft or hard, got '{confusion}'")
    if methods is not None and (not methods or set(methods) - set(METHODS)):
        raise DiscoveryError(f"methods must be among {list(METHODS)}, got {list(methods)}")
    run_dir = Path(run_dir)
    data = load_discovery_inputs(run_dir)
    val_images = int(data["val_confusion"].sum())
    if methods is None:
        methods = METHODS if val_images else tuple(m for m in METHODS if m != "confusion")
    elif "confusion" in methods and val_images == 0:
        raise DiscoveryError(f"{run_dir} {NO_VALIDATION}: rerun with dataset.val_size>0, or use --method vectors")
    distances = {
        "confusion": lambda: confusion_distances(data["val_soft_confusion" if confusion == "soft" else "val_confusion"]),
        "vectors": lambda: vector_distances(data["class_vectors"]),
    }
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "discovered"
    results = {}
    for name in methods:
        table = cluster(distances[name](), k, method)
        source = (f"{confusion} validation confusion ({val_images} images, {data['protocol']} protocol)"
                  if name == "confusion" else "class vectors (rows of the final linear layer, cosine)")
        ari = agreement(table, data["cases"], data["superclasses"], data["case"])
        path = out_dir / f"{name}_k{k}.yaml"
        command = train_command(run_dir, data["dataset"], path)
        write_mapping(path, table, data["class_names"], [
            f"{k} superclasses discovered by src.discover from {run_dir}",
            f"method: {name}: {method} linkage on {source}",
            "adjusted Rand index: " + ", ".join(f"{c} {v:.3f}" for c, v in ari.items()),
            f"train: {command}"])
        results[name] = {"table": table, "ari": ari, "file": path, "source": source, "command": command}
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.discover", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run directory (holds hierarchy.npz)")
    parser.add_argument("--k", type=int, required=True, help="number of superclasses to derive")
    parser.add_argument("--method", choices=("both", *METHODS), default="both",
                        help="both (default): confusion and vectors, vectors alone on a run without validation data")
    parser.add_argument("--confusion", choices=("soft", "hard"), default="soft",
                        help="soft: summed predicted probabilities (default); hard: counts of argmax predictions")
    parser.add_argument("--linkage", choices=LINKAGES, default="average")
    parser.add_argument("--out", type=Path, default=None, help="where to write the mappings (RUN_DIR/discovered)")
    args = parser.parse_args(argv)
    try:
        results = discover(args.run_dir, args.k, None if args.method == "both" else (args.method,),
                           args.confusion, args.linkage, args.out)
    except Exception as e:
        sys.exit(exit_code(e))
    if args.method == "both" and "confusion" not in results:
        print(f"warning: skipped the confusion method: {args.run_dir} {NO_VALIDATION}", file=sys.stderr)
    data = load_discovery_inputs(args.run_dir)
    names = data["class_names"]
    print(f"{args.k} superclasses for {data['dataset']} from {args.run_dir} (case {data['case']})")
    for name, result in results.items():
        table = result["table"]
        groups = " | ".join("{" + ", ".join(names[c] for c in range(len(table)) if table[c] == s) + "}"
                            for s in range(args.k))
        print(f"\n{name}: {args.linkage} linkage on {result['source']}\n  {groups}")
        print("  adjusted Rand index: " + "  ".join(f"{c} {v:.3f}" for c, v in result["ari"].items()))
        print(f"  wrote {result['file']}")
        print(f"  train: {result['command']}")


if __name__ == "__main__":
    main()
