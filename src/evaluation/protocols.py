"""Test protocols without the oracle superclass, and hierarchy metrics (docs/hierarchy.md).

Protocols, i.e. what is fed as x* at test time:

- ``oracle``: the true superclass (the paper's protocol, ``test_error``);
- ``inferred``: nothing. Every candidate superclass s is fed as x* = e_s, each class c is scored
  under its own superclass t[c] only, and the best (t[c], c) pair is the prediction;
- ``shuffled``: a wrong superclass, drawn uniformly among the others, to show how much the model
  leans on the hint;
- ``masked`` (``masked_scores``): any network's logits restricted to the classes of the true superclass,
  the same hint given to a network without the block (per Table 1 case for the baseline).

The superclass metrics are functions of a confusion matrix ``C[true, predicted]`` and a class ->
superclass table ``t``; the ProxyDR metrics (``src.evaluation.hierarchy``) and the mistake metrics (``src.evaluation.mistakes``) take a
class tree (``src.data.tree``). Plain torch / numpy / scipy, no Lightning: the module calls these in its test
hooks, the tests call them directly.
"""
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy.sparse import issparse
from scipy.spatial.distance import pdist, squareform

from src.data.superclasses import Case
from src.run.errors import UserError
from src.evaluation.scale import pair_spearman, sparse_hierarchy_metrics
from src.evaluation.hierarchy import hierarchy_mean_corr, hierarchy_rf
from src.data.tree import ClassTree, as_tree


PROTOCOLS = ("oracle", "inferred", "shuffled")
CANDIDATE_ELEMENTS = 2**27  # logits the inferred protocol holds at once, (B, S, K): 512 MB of float32
INFERRED_RULES = ("softmax", "logit")


class EvaluationConfigError(UserError, ValueError):
    """A bad ``eval.*`` option."""


def evaluation_options(options: Mapping) -> dict:
    """Check the ``eval`` config block; return the evaluation keyword arguments of ``TestProtocols``
    (``eval.hierarchy`` is resolved with the case, in ``build()``: ``src.data.superclasses.evaluation_tree``)."""
    for key, choices in (("inferred_rule", INFERRED_RULES), ("metrics_protocol", PROTOCOLS)):
        if options[key] not in choices:
            raise EvaluationConfigError(f"eval.{key}={options[key]} is not one of {list(choices)}")
    return {"inferred_rule": options["inferred_rule"], "metrics_protocol": options["metrics_protocol"],
            "shuffle_seed": int(options["shuffle_seed"])}


# --- protocols -------------------------------------------------------------------------------------

def candidate_logits(net: torch.nn.Module, h: torch.Tensor, extras: dict, num_superclasses: int) -> torch.Tensor:
    """Logits (B, S, K) with every superclass s fed as x* = e_s, from the block's input h (``forward_features``).

    One head call on S·B rows: the layers before the block run once.
    """
    b = len(h)
    x_star = torch.eye(num_superclasses, device=h.device).repeat_interleave(b, dim=0)  # s-major, (S·B, S)
    repeated = {k: v.repeat(num_superclasses, *[1] * (v.dim() - 1)) for k, v in extras.items()}
    logits = net.forward_head(h.repeat(num_superclasses, *[1] * (h.dim() - 1)), x_star, repeated).logits
    return logits.view(num_superclasses, b, -1).transpose(0, 1)


def inferred_scores(candidates: torch.Tensor, table: Sequence[int], rule: str = "softmax") -> torch.Tensor:
    """Score (B, K) of each class c under its own superclass only: the (t[c], c) pairs.

    ``softmax``: log p(c | x, x* = e_{t[c]}), the softmax over all classes with t[c] fed. Comparable
    across candidates: each is a probability from a full distribution.
    ``logit``: the raw logit. Biased: the auxiliary score a of candidate s scales all its logits
    (eq. 2), so the candidate with the largest a tends to win whatever the image.
    """
    if rule not in INFERRED_RULES:
        raise EvaluationConfigError(f"unknown inferred rule '{rule}'; choose one of {list(INFERRED_RULES)}")
    if rule == "softmax":
        candidates = candidates.float().log_softmax(dim=-1)
    b, _, k = candidates.shape
    index = torch.as_tensor(table, device=candidates.device).expand(b, 1, k)  # index[b, 0, c] = t[c]
    return candidates.gather(1, index).squeeze(1)


def wrong_superclass(superclass: torch.Tensor, num_superclasses: int, generator: torch.Generator) -> torch.Tensor:
    """A superclass other than the true one, uniform among the S − 1 others (needs S ≥ 2)."""
    if num_superclasses < 2:
        raise ValueError("a wrong superclass needs at least two superclasses")
    offset = torch.randint(1, num_superclasses, superclass.shape, generator=generator)
    return (superclass + offset.to(superclass.device)) % num_superclasses


def protocol_scores(
    net: torch.nn.Module,
    h: torch.Tensor,
    extras: dict,
    superclass: torch.Tensor,
    table: Optional[Sequence[int]],
    rule: str = "softmax",
    generator: Optional[torch.Generator] = None,
) -> dict[str, torch.Tensor]:
    """Scores (B, K) per protocol, from the block's input h; the argmax of each is that protocol's prediction.

    Without an auxiliary block (baseline) x* does not exist: every protocol gets the same logits.
    ``shuffled`` is left out without a ``generator`` or with a single superclass (no wrong one exists).
    """
    if net.auxiliary is None:
        return dict.fromkeys(PROTOCOLS, net.forward_head(h, None, extras).logits)
    s = net.auxiliary.num_superclasses
    # The oracle call has the same shape as the training/test step, so its logits match test_error bit for bit.
    oracle = net.forward_head(h, F.one_hot(superclass, s).to(torch.float32), extras).logits
    wrong = wrong_superclass(superclass, s, generator) if generator is not None and s > 1 else None
    if s * oracle.numel() > CANDIDATE_ELEMENTS:  # thousands of superclasses × classes: a few at a time
        return {"oracle": oracle, **chunked_protocol_scores(net, h, extras, table, rule, wrong)}
    candidates = candidate_logits(net, h, extras, s)
    scores = {"oracle": oracle, "inferred": inferred_scores(candidates, table, rule)}
    if wrong is not None:
        scores["shuffled"] = candidates[torch.arange(len(h), device=h.device), wrong]
    return scores


def chunked_protocol_scores(net: torch.nn.Module, h: torch.Tensor, extras: dict, table: Sequence[int], rule: str,
                            wrong: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
    """``inferred`` (and ``shuffled`` given the ``wrong`` superclasses) of ``protocol_scores`` with the candidate
    superclasses fed a block at a time, so that no more than ``CANDIDATE_ELEMENTS`` logits exist at once: at
    10,000 classes and 4,884 superclasses (iNaturalist's genera) all (B, S, K) would be 100 GB for 512 images.
    The same values, from smaller head calls."""
    if rule not in INFERRED_RULES:
        raise EvaluationConfigError(f"unknown inferred rule '{rule}'; choose one of {list(INFERRED_RULES)}")
    s, b = net.auxiliary.num_superclasses, len(h)
    t = torch.as_tensor(table, device=h.device)
    inferred, shuffled = None, None
    step = max(1, CANDIDATE_ELEMENTS // (b * len(t)))
    for first in range(0, s, step):
        last = min(s, first + step)
        x_star = torch.eye(s, device=h.device)[first:last].repeat_interleave(b, dim=0)  # s-major, as candidate_logits
        repeated = {key: v.repeat(last - first, *[1] * (v.dim() - 1)) for key, v in extras.items()}
        logits = net.forward_head(h.repeat(last - first, *[1] * (h.dim() - 1)), x_star, repeated).logits
        logits = logits.view(last - first, b, -1).transpose(0, 1)  # (B, block, K)
        scored = logits.float().log_softmax(dim=-1) if rule == "softmax" else logits
        if inferred is None:
            inferred = torch.empty(b, len(t), dtype=scored.dtype, device=h.device)
            shuffled = torch.empty(b, len(t), dtype=logits.dtype, device=h.device) if wrong is not None else None
        classes = torch.nonzero((t >= first) & (t < last)).squeeze(1)
        inferred[:, classes] = scored[:, t[classes] - first, classes]
        if wrong is not None:
            rows = torch.nonzero((wrong >= first) & (wrong < last)).squeeze(1)
            shuffled[rows] = logits[rows, wrong[rows] - first]
    return {"inferred": inferred, **({"shuffled": shuffled} if wrong is not None else {})}


def masked_scores(logits: torch.Tensor, label: torch.Tensor, table: Sequence[int]) -> torch.Tensor:
    """The ``masked`` protocol: the logits of the classes outside the image's true superclass set to −inf, so the
    prediction is the best class among those of the true superclass. It gives any network the test-time hint
    that HAL's oracle protocol feeds its block: the fair yardstick for ``test_error``."""
    t = torch.as_tensor(table, device=logits.device)
    same = t[None, :] == t[label][:, None]  # (B, K): class c is in image b's superclass
    return logits.float().masked_fill(~same, float("-inf"))


def masked_tables(case: Optional[Case], cases: Mapping[str, Case], auxiliary: bool) -> dict[str, list[int]]:
    """The superclass tables of the ``masked`` protocol: a run with the block, its own (the same hint as its
    oracle); any other run, every named case of its dataset and its own case."""
    if auxiliary:
        return {case.name: case.table}
    tables = {name: c.table for name, c in cases.items()}
    if case is not None:
        tables.setdefault(case.name, case.table)
    return tables


# --- hierarchy metrics (all in %) -----------------------------------------------------------------

def error(confusion: np.ndarray) -> Optional[float]:
    """Error % of a confusion, dense or sparse (``src.evaluation.scale``)."""
    total = confusion.sum()
    return float(100 * (1 - confusion.diagonal().sum() / total)) if total else None


def hierarchy_metrics(confusion: Optional[np.ndarray], table: Optional[Sequence[int]]) -> dict:
    """Superclass accuracy, share of mistakes within the true superclass, error per superclass.

    The predicted superclass is the superclass of the predicted class. A value is None where it is
    undefined: no hierarchy, no mistakes, or no test image of that superclass.
    """
    out = {"superclass_acc": None, "within_superclass_mistakes": None, "per_superclass_error": None}
    if table is None or confusion is None or not np.sum(confusion):
        return out
    if issparse(confusion):  # above DENSE_CONFUSION_LIMIT classes
        return sparse_hierarchy_metrics(confusion, table)
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    t = np.asarray(table)
    same = t[:, None] == t[None, :]
    off_diagonal = ~np.eye(len(t), dtype=bool)
    mistakes = confusion[off_diagonal].sum()
    out["superclass_acc"] = float(100 * confusion[same].sum() / total)
    out["within_superclass_mistakes"] = float(100 * confusion[same & off_diagonal].sum() / mistakes) if mistakes else None
    per = []
    for s in range(t.max() + 1):
        members = np.flatnonzero(t == s)
        seen = confusion[members].sum()
        per.append(float(100 * (1 - confusion[members, members].sum() / seen)) if seen else None)
    out["per_superclass_error"] = per
    return out


def tree_distances(tree) -> np.ndarray:
    """Condensed path lengths between classes (``ClassTree.path_lengths``; a table is a two-level tree)."""
    return squareform(as_tree(tree).path_lengths, checks=False)


def hierarchy_spearman(class_vectors: np.ndarray, tree) -> Optional[float]:
    """Spearman correlation over all pairs of classes of representative and tree distances (ProxyDR's
    "elementwise correlation", ``corr_from_DMs(..., classwise=False)``).

    Class representatives are the rows of the final linear layer or the proxies; their cosine distance is a
    monotone map of both the Euclidean distance of the normalised rows and their angle, which Spearman ignores.
    None without a tree or when the tree distance is constant (one superclass, or one class per superclass).
    """
    if tree is None:
        return None
    return pair_spearman(pdist(np.asarray(class_vectors, dtype=np.float64), "cosine"),
                         squareform(as_tree(tree).lca_heights, checks=False))


def headline_errors(record: dict) -> dict:
    """``test_error`` / ``test_acc`` (the paper's oracle protocol) as the same float64 number as
    ``test_error_oracle``, where the protocols recorded it: one number under its documented alias, not Lightning's
    float32 copy of it (docs/configuration.md, "metrics.json keys")."""
    oracle = record.get("test_error_oracle")
    return {} if oracle is None else {"test_error": oracle, "test_acc": 100 - oracle}


def evaluation_record(
    confusions: Mapping[str, Optional[np.ndarray]],
    table: Optional[Sequence[int]],
    metrics_protocol: str,
    class_vectors: np.ndarray,
    tree: Optional[ClassTree] = None,
    distance: str = "euc",
) -> dict:
    """The evaluation fields of ``metrics.json`` from one test confusion matrix per protocol (None: not run).

    ``table`` is the class -> superclass table of the superclass metrics; ``tree`` the tree of the ProxyDR
    metrics (``src.evaluation.hierarchy``), whose learned distances are in the model's own metric ``distance``.
    """
    record = {f"test_error_{p}": None if confusions.get(p) is None else error(confusions[p]) for p in PROTOCOLS}
    record.update(hierarchy_metrics(confusions.get(metrics_protocol), table))
    record["hierarchy_spearman"] = hierarchy_spearman(class_vectors, tree)
    record["hierarchy_mean_corr"] = hierarchy_mean_corr(class_vectors, tree, distance)
    record["hierarchy_rf"] = hierarchy_rf(class_vectors, tree, distance)
    return record


# --- figure ---------------------------------------------------------------------------------------

def superclass_order(table: Optional[Sequence[int]], num_classes: int) -> list[int]:
    """Classes sorted by superclass, then by index."""
    if table is None:
        return list(range(num_classes))
    return sorted(range(num_classes), key=lambda c: (table[c], c))


def confusion_figure(
    confusion: np.ndarray, table: Optional[Sequence[int]], class_names: Sequence[str], title: str = ""
) -> Figure:
    """Row-normalised confusion matrix, classes ordered by superclass, superclass blocks outlined.

    A ``matplotlib.figure.Figure`` without pyplot: no GUI backend and no global figure state.
    """
    k = len(confusion)
    order = superclass_order(table, k)
    counts = np.asarray(confusion, dtype=np.float64)[np.ix_(order, order)]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.45 * k, 20)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    names = [str(class_names[c]) if c < len(class_names) else str(c) for c in order]
    if table is not None:
        names = [f"{n} (s{table[c]})" for n, c in zip(names, order)]
        bounds = np.cumsum(np.bincount(np.asarray(table)))[:-1] - 0.5
        for b in bounds:
            ax.axhline(b, color="crimson", lw=1)
            ax.axvline(b, color="crimson", lw=1)
    ax.set_xticks(range(k), names, rotation=90)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title(title)
    return fig
