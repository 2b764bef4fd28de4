"""Helpers shared by the tests: compose the real configs the way `python -m src.train` does; hand-made run dirs."""
import csv
import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import src  # noqa: F401  importing src registers the typed schema (base_config) that conf/config.yaml extends

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"

# Small and fast: a few epochs on digits without progress bars or checkpoints.
# threads=1: bit-for-bit equal runs on a CPU need one thread (docs/reliability.md, "Reproducible runs").
FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false",
        "trainer.accelerator=cpu", "threads=1"]


def compose_cfg(overrides: list[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def hand_scores(net, datamodule, table=None, split: str = "test", rows: int = None) -> dict:
    """The test metrics of a network's current weights, recomputed with one plain forward pass over the whole
    test split, or its first ``rows`` (no Lightning, no ``eval_batches``): a second computation to compare
    ``metrics.json`` with. ``predicted`` is the prediction with the true superclass fed.

    ``test_error`` (true superclass fed), ``test_loss``, ``test_error_inferred`` (each superclass fed in turn;
    class c scored by log p(c | x* = e_t[c])), ``masked`` (logits restricted to the true superclass of
    ``table``) and the extra heads' errors / accuracies by tap name.
    """
    images, superclass, label = (t[:rows] for t in datamodule.splits[split])
    was_training = net.training
    net.eval()
    x = (images.float() / 255 - datamodule.mean.view(1, -1, 1, 1)) / datamodule.std.view(1, -1, 1, 1)
    s = net.auxiliary.num_superclasses if net.auxiliary is not None else 0
    out = {}
    with torch.no_grad():
        output = net(x, F.one_hot(superclass, s).float() if s else None)
        logits = output.logits.float()
        out["test_error"] = 100 * (logits.argmax(1) != label).float().mean().item()
        out["test_loss"] = F.cross_entropy(logits, label).item()
        out["predicted"] = logits.argmax(1)
        if s:
            candidates = torch.stack([net(x, F.one_hot(torch.full_like(label, j), s).float()).logits.float()
                                      .log_softmax(1) for j in range(s)], 1)  # (N, S, K)
            t = torch.as_tensor(datamodule.superclasses)
            scores = candidates[:, t, torch.arange(len(t))]  # scores[n, c] = candidates[n, t[c], c]
            out["test_error_inferred"] = 100 * (scores.argmax(1) != label).float().mean().item()
            out["scores_inferred"] = scores
            out["predicted_inferred"] = scores.argmax(1)
            # shuffled: a wrong superclass, offset 1..S-1 drawn per eval batch from eval.shuffle_seed (0)
            step = datamodule.eval_batch_size
            offset = torch.cat([torch.randint(1, s, label[i:i + step].shape,
                                              generator=torch.Generator().manual_seed(i // step))
                                for i in range(0, len(label), step)]) if s > 1 else None
            if offset is not None:
                wrong = (superclass + offset) % s
                shuffled = candidates[torch.arange(len(label)), wrong].argmax(1)
                out["test_error_shuffled"] = 100 * (shuffled != label).float().mean().item()
        if table is not None:
            inside = torch.as_tensor(table)[None, :] == torch.as_tensor(table)[label][:, None]
            masked = logits.masked_fill(~inside, float("-inf"))
            out["masked"] = 100 * (masked.argmax(1) != label).float().mean().item()
        out["extras"] = {k: v for k, v in output.extras.items()}
        out["scores_inferred"] = out.get("scores_inferred", logits)  # without a block the plain logits
    out["class_vectors"] = net.class_vectors().detach().double().numpy()
    out["label"], out["superclass"] = label, superclass
    net.train(was_training)
    return out


class HandScore(pl.Callback):
    """Keeps ``hand_scores`` of the final weights, taken when the test pass ends."""

    def __init__(self, table=None, rows: int = None):
        self.table, self.rows, self.scores, self.val = table, rows, None, None

    def on_test_end(self, trainer, pl_module):
        self.scores = hand_scores(pl_module.net, trainer.datamodule, self.table, rows=self.rows)
        self.tree = getattr(trainer.datamodule, "tree", None)
        if len(trainer.datamodule.splits["val"][0]):
            self.val = hand_scores(pl_module.net, trainer.datamodule, split="val")


# A report's PNG starts so; write_run: a run dir as src.train leaves it (the report tests' sweeps).
PNG = b"\x89PNG\r\n\x1a\n"


def write_run(sweep: Path, name: str, overrides=(), history=None, aux=None, config=False, **record) -> Path:
    """A run dir as src.train leaves it; ``config=True``: also ``.hydra/config.yaml``, composed from ``overrides``
    the way Hydra saves it."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    if config:
        OmegaConf.save(compose_cfg(list(overrides)), run / ".hydra" / "config.yaml")
    record = {"status": "finished", "depth": 10, "epochs": 3, **record}
    (run / "metrics.json").write_text(json.dumps(record))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    if history is not None:
        keys = list(history)
        with open(run / "history.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", *keys])
            for epoch in range(len(history[keys[0]])):
                writer.writerow([epoch, *(history[k][epoch] for k in keys)])
    if aux is not None:
        np.savez(run / "aux_scores.npz", **aux)
    return run


def hand_heights(levels) -> np.ndarray:
    """LCA heights from the level tables (class -> group, finest level first): 0 for a class itself, 1 + the
    first level where two classes share a group, L + 1 when only the root joins them."""
    k = len(levels[0])
    h = np.full((k, k), len(levels) + 1)
    for depth, table in reversed(list(enumerate(levels, 1))):
        h[np.equal.outer(table, table)] = depth
    np.fill_diagonal(h, 0)
    return h


def hand_mistakes(scores, label, levels) -> dict:
    """ECE (15 equal bins of the max softmax, L1), mistake severity, HD@k and the CRM fields of (N, K) scores
    against the tree of ``levels``, written out in numpy."""
    p = torch.as_tensor(scores).double().softmax(1).numpy()
    y = np.asarray(label)
    confidence, predicted = p.max(1), p.argmax(1)
    bins = np.clip(np.searchsorted(np.linspace(0, 1, 16), confidence, side="right") - 1, 0, 14)
    ece = sum(abs((predicted[bins == b] == y[bins == b]).mean() - confidence[bins == b].mean()) * (bins == b).mean()
              for b in range(15) if (bins == b).any())
    h = hand_heights(levels)
    cost = p @ h  # expected tree distance of predicting each class
    order = np.argsort(cost, axis=1, kind="stable")  # least cost first, ties to the lower class
    crm = order[:, 0]
    wrong = crm != y
    ranked = np.argsort(-p, axis=1, kind="stable")  # the scores' own ranking, ties to the lower class
    mistake = ranked[:, 0] != y
    return {"ece": ece, "mistake_severity": h[ranked[mistake, 0], y[mistake]].mean() if mistake.any() else None,
            "hierarchical_distance": {str(k): h[ranked[:, :k], y[:, None]].mean() for k in (1, 5, 20)
                                      if k < p.shape[1]},
            "test_error_crm": 100 * wrong.mean(),
            "mistake_severity_crm": h[crm[wrong], y[wrong]].mean() if wrong.any() else None,
            "hierarchical_distance_crm": {str(k): h[order[:, :k], y[:, None]].mean() for k in (1, 5, 20)
                                          if k < p.shape[1]}}


def hand_hierarchy(vectors, table, distance: str) -> tuple[float, float]:
    """(mean_corr, rf) of class vectors against a two-level tree, rescored with scipy: per-class Spearman of the
    learned distances (euc or arccos of the normalised vectors) with the tree's (0, 2 same superclass, 4 across),
    Fisher-averaged; normalised Robinson-Foulds of scipy's WPGMA tree (linkage "weighted") against the reference
    tree's splits (src.evaluation.hierarchy's port of Biopython, whose class-order ties scipy does not share)."""
    from scipy import stats
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    from src.evaluation.hierarchy import tree_distance_matrix, wpgma_clusters

    w = np.asarray(vectors, dtype=np.float64)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = np.clip(w @ w.T, -1, 1)
    d = np.arccos(cos) if distance == "arccos" else np.sqrt(np.maximum(2 - 2 * cos, 0))
    np.fill_diagonal(d, 0)
    k = len(table)
    d_t = np.where(np.equal.outer(table, table), 2.0, 4.0)
    np.fill_diagonal(d_t, 0)
    rho = [stats.spearmanr(d[:, i], d_t[:, i]).statistic for i in range(k)]
    mean_corr = float(np.tanh(np.mean(np.arctanh(rho))))
    every = frozenset(range(k))

    def splits(clusters):
        return {c if 0 not in c else every - c for c in clusters if 2 <= len(c) <= k - 2}

    learned = [frozenset([i]) for i in range(k)]
    for a, b, _, _ in linkage(squareform(d, checks=False), method="weighted"):
        learned.append(learned[int(a)] | learned[int(b)])
    reference, mine = splits(wpgma_clusters(tree_distance_matrix(list(table)))), splits(learned)
    return mean_corr, len(reference ^ mine) / (len(reference) + len(mine))
