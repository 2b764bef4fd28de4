"""How bad the mistakes are, against a class tree (docs/hierarchy.md, "Hierarchy metrics").

The field's metrics (Making Better Mistakes, Bertinetto et al. 2020, GitHub fiveai/making-better-mistakes; CRM,
Karthik et al. 2021, GitHub sgk98/CRM-Better-Mistakes), with h(a, b) the LCA height of ``src.data.tree`` (their
"ilsvrc" distance; leaves 0, in tree levels)::

    mistake severity   = mean over the mistakes (ŷ ≠ y) of h(ŷ, y)
    HD@k               = mean over images of (1/k) Σ_{c in the top k} h(c, y),   k in (1, 5, 20), k < K
    level accuracy     = % of images whose predicted class is in the true class's group, per level
    top-k accuracy     = % of images whose class is among the k best scored (k = 1, 5), MBM's ``accuracy``
    best HD@k          = mean over images of min_{c in the top k} h(c, y): MBM's "hdist_top" (run_xent.py)
    mistakes by height = how many top-1 mistakes have h(ŷ, y) = 1, 2, ..., L + 1 (a list, entry h − 1)
    ECE, MCE           = the mean and the largest |accuracy − mean confidence| of the max softmax over 15 bins
                         (lo, hi] on [0, 1], the first [0, 1/15] (CRM's ``guo_ECE`` and ``MCE``), fractions
    CRM                = argmin_c Σ_j p_j · h(c, j): the class of least expected tree distance under the softmax

Top-k lists are sorted by score with ties to the lower class index (a stable sort), as the CRM code's
``heapq.nlargest``; the top-1 class is the argmax (first maximum). Pure torch on (N, K) scores.

At 10,000 classes nothing is (N, K, K) or a float (K, K): ``MistakeMetrics`` sums the metrics batch by batch
(the test protocols feed it each test batch), ranks only the top 20 (``top_ranking``, exact: the stable sort's
first k), reads h from the tree's one cached uint8 matrix, and computes CRM's expected distance from the group
masses of each level (``crm_scores_by_levels``, O(K·L) per image instead of a (K, K) product).
"""
import warnings
from typing import Optional

import numpy as np
import torch

from src.data.tree import CLASS_LEVEL, ClassTree

KS = (1, 5, 20)
TOP_KS = (1, 5)   # top-k accuracy, as MBM's ``accuracy(output, target, ks)``
ECE_BINS = 15
CHUNK = 1024  # images scored at once by ``mistake_record``: (CHUNK, K) arrays


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """Classes by decreasing score (N, K), ties to the lower index."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def top_ranking(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The first k columns of ``ranking(scores)`` (N, k), from ``torch.topk``: the classes above the k-th score in
    (score, index) order, then the lowest indices among those equal to it."""
    if k >= scores.shape[1] or torch.isnan(scores.sum()):  # a NaN (or +inf with -inf): as the sort orders it
        return ranking(scores)[:, :k]
    values, index = torch.topk(scores, k, dim=1)       # by decreasing score; ties in no set order
    kth = values[:, -1:]
    by_index = torch.sort(index, dim=1, stable=True)
    values = values.gather(1, by_index.indices)
    index = by_index.values.gather(1, torch.sort(values, dim=1, descending=True, stable=True).indices)
    # The m classes above the k-th score lead; the k − m places left go to the classes equal to it, by index.
    # Where topk saw every class tied with the k-th (ties == k − m), ``index`` has them in that order already.
    above = (values > kth).sum(1, keepdim=True)
    equal = scores == kth
    redo = (equal.sum(1, keepdim=True) > k - above).squeeze(1).nonzero().squeeze(1)
    if len(redo):
        columns = torch.arange(scores.shape[1], device=scores.device)
        first_equal = torch.topk(torch.where(equal[redo], columns, scores.shape[1]), k, dim=1, largest=False).values
        position, m = torch.arange(k, device=scores.device).expand(len(redo), k), above[redo]
        index[redo] = torch.where(position < m, index[redo], first_equal.gather(1, (position - m).clamp(min=0)))
    return index


def mistake_severity(predicted: torch.Tensor, label: torch.Tensor, heights: torch.Tensor) -> Optional[float]:
    """Mean h(ŷ, y) over the mistakes; None without a mistake."""
    wrong = predicted != label
    return float(heights[predicted[wrong], label[wrong]].double().mean()) if wrong.any() else None


def hierarchical_distance(order: torch.Tensor, label: torch.Tensor, heights: torch.Tensor,
                          ks=KS) -> dict[str, float]:
    """{str(k): HD@k} from the ranking ``order`` (N, K), for each k < K."""
    k_max = order.shape[1]
    h = heights[order, label[:, None]].double()  # h(c, y) of each image's ranked classes
    return {str(k): float(h[:, :k].mean()) for k in ks if k < k_max}


def level_accuracy(predicted: torch.Tensor, label: torch.Tensor, tree: ClassTree) -> dict[str, float]:
    """{level: % of images predicted in the true group}, the classes themselves first (``class``)."""
    out = {CLASS_LEVEL: float(100 * (predicted == label).double().mean())}
    for level in tree.levels:
        t = torch.as_tensor(level.table)
        out[level.name] = float(100 * (t[predicted] == t[label]).double().mean())
    return out


def crm_scores(probabilities: torch.Tensor, heights: torch.Tensor) -> torch.Tensor:
    """−Σ_j p_j · h(c, j) for every class c (N, K): the argmax is CRM's prediction, the ranking its top k."""
    return -(probabilities.double() @ heights.double())


def crm_scores_by_levels(probabilities: torch.Tensor, tree: ClassTree,
                         tables: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
    """``crm_scores`` from the tree's levels, without h: with g_i(c) the group of c at level i (g_0(c) = c) and
    P_i(g) = Σ_{j in g} p_j, h(c, j) = Σ_{i=0..L} [g_i(c) ≠ g_i(j)], so::

        Σ_j p_j · h(c, j) = (L + 1) · Σ_j p_j − p_c − Σ_{i=1..L} P_i(g_i(c))

    O(K·L) per image. Equal to ``crm_scores`` up to float64 rounding (tests/evaluation/test_metrics_at_scale.py)."""
    p = probabilities.double()
    if tables is None:
        tables = [torch.as_tensor(level.table) for level in tree.levels]
    tables = [t.to(p.device) for t in tables]
    total = p.sum(1, keepdim=True)
    # Group masses P_i bottom-up, then the cost of each group top-down: cost_i(g) = cost_{i+1}(parent(g)) + S − P_i(g)
    masses, finer, finer_table = [], p, torch.arange(p.shape[1], device=p.device)
    for level, t in zip(tree.levels, tables):
        parent = torch.zeros(len(finer_table.unique()), dtype=torch.long, device=p.device)
        parent[finer_table] = t  # the group of each finer node (classes first)
        masses.append(torch.zeros(len(p), len(level.group_names), dtype=p.dtype, device=p.device)
                      .index_add_(1, parent, finer))
        finer, finer_table = masses[-1], t
    cost = torch.zeros_like(total)  # (n, groups of the level), coarsest first
    for i in range(len(tables) - 1, -1, -1):
        if i + 1 < len(tables):
            parent = torch.zeros(len(tree.levels[i].group_names), dtype=torch.long, device=p.device)
            parent[tables[i]] = tables[i + 1]
            cost = cost.index_select(1, parent)
        cost = cost + (total - masses[i])
    return -(cost.index_select(1, tables[0]).add_(total - p))


def calibration_errors(probabilities: torch.Tensor, label: torch.Tensor, bins: int = ECE_BINS) -> tuple[float, float]:
    """(ECE, MCE) of the max probability, CRM's ``guo_ECE`` and ``MCE`` (its ``ECE_helper``, ``compute_acc_bin``):
    bins (lo, hi] with upper bounds ``arange(1/bins, 1 + 1/bins, 1/bins)`` and the first bin closed at 0, so a
    saturated confidence of exactly 1.0 lands in the last bin (torchmetrics' binning drops it). An empty bin adds
    nothing to ECE and counts as 0 in MCE, as in the code."""
    p = probabilities.detach().double().cpu().numpy()
    return binned_calibration(p.max(axis=1), p.argmax(axis=1) == label.cpu().numpy(), bins)


def binned_calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> tuple[float, float]:
    """``calibration_errors`` from each image's confidence and correctness (what ``MistakeMetrics`` keeps)."""
    size = 1 / bins
    ece, gaps = 0.0, []
    for upper in np.arange(size, 1 + size, size):
        lower = upper - size
        inside = ((confidence > lower) | (lower == 0)) & (confidence <= upper)
        n = int(inside.sum())
        gap = abs(correct[inside].mean() - confidence[inside].sum() / n) if n else 0.0
        ece += gap * n / len(confidence)
        gaps.append(gap)
    return float(ece), float(max(gaps))



def calibration_error(probabilities: torch.Tensor, label: torch.Tensor) -> float:
    """15-bin ECE of the max probability (L1), as CRM's ``guo_ECE``: ``calibration_errors``' first value."""
    return calibration_errors(probabilities, label)[0]


def top_k_accuracy(order: torch.Tensor, label: torch.Tensor, ks=TOP_KS) -> dict[str, float]:
    """{f"top{k}_acc": % of images whose class is in the top k}, for each k ≤ K."""
    hit = order == label[:, None]
    return {f"top{k}_acc": float(100 * hit[:, :k].any(1).double().mean()) for k in ks if k <= order.shape[1]}


def best_hierarchical_distance(order: torch.Tensor, label: torch.Tensor, heights: torch.Tensor,
                               ks=KS) -> dict[str, float]:
    """{str(k): mean over images of min_{c in the top k} h(c, y)}, for each k < K (MBM's "hdist_top")."""
    h = heights[order, label[:, None]].double()
    return {str(k): float(h[:, :k].min(1).values.mean()) for k in ks if k < order.shape[1]}


def mistakes_by_height(predicted: torch.Tensor, label: torch.Tensor, heights: torch.Tensor) -> list[int]:
    """Counts of top-1 mistakes by LCA height: entry h − 1 counts the mistakes with h(ŷ, y) = h, h = 1..L+1."""
    h = heights[predicted, label]
    return torch.bincount(h[h > 0] - 1, minlength=int(heights.max())).tolist()


def tree_heights(tree: ClassTree) -> torch.Tensor:
    """The tree's cached ``lca_heights`` as a torch view of the same memory (no copy: one matrix per tree)."""
    with warnings.catch_warnings():  # torch warns that the array is read-only; nothing here writes to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(tree.lca_heights)


class MistakeMetrics:
    """The fields of ``mistake_record``, summed over batches of scores (N, K): ``update`` each batch, then
    ``compute``. Exact sums (integer heights and counts), so the result equals one call on the whole split."""

    def __init__(self, tree: Optional[ClassTree], num_classes: int) -> None:
        self.tree, self.num_classes = tree, num_classes
        self.ks = [k for k in KS if k < num_classes]
        self.depth = max([1, *self.ks])  # ranked classes needed per image
        self.top_ks = [k for k in TOP_KS if k <= num_classes]
        self.depth = max([self.depth, *self.top_ks])
        self.confidence, self.correct = [], []  # per image, float64 softmax as CRM's: ECE and MCE in compute()
        self.top_hits = dict.fromkeys(self.top_ks, 0)
        self.heights = tree_heights(tree) if tree is not None else None
        self.tables = [torch.as_tensor(level.table) for level in tree.levels] if tree is not None else []
        self.images = 0
        self.sums = {name: {"wrong": 0, "severity": 0, "hd": dict.fromkeys(self.ks, 0)} for name in ("plain", "crm")}
        self.best_hd = dict.fromkeys(self.ks, 0)  # Σ over images of min_{c in the top k} h(c, y) (MBM's hdist_top)
        self.by_height = np.zeros(int(self.heights.max()) if tree is not None else 0, dtype=np.int64)
        self.level_hits = np.zeros(1 + len(self.tables), dtype=np.int64)

    def update(self, scores: torch.Tensor, label: torch.Tensor) -> None:
        scores, label = scores.detach().float().cpu(), label.cpu()
        if not len(label):
            return
        probabilities = scores.softmax(dim=1)
        exact = scores.double().softmax(dim=1)  # calibration from float64 probabilities, as CRM's numpy softmax
        self.confidence.append(exact.max(dim=1).values.numpy())
        self.correct.append((exact.argmax(dim=1) == label).numpy())  # the first maximum, as numpy's argmax
        self.images += len(label)
        top = top_ranking(scores, self.depth)
        for k in self.top_ks:
            self.top_hits[k] += int((top[:, :k] == label[:, None]).any(1).sum())
        if self.tree is None:
            return
        self._add("plain", top, label)
        self._add("crm", top_ranking(crm_scores_by_levels(probabilities, self.tree, self.tables), self.depth), label)
        predicted = top[:, 0]
        hits = [(predicted == label).sum()] + [(t[predicted] == t[label]).sum() for t in self.tables]
        self.level_hits += np.array([int(h) for h in hits])

    def _add(self, name: str, top: torch.Tensor, label: torch.Tensor) -> None:
        sums = self.sums[name]
        h = self.heights[top, label[:, None]].long()  # h(c, y) of each image's top classes (n, depth)
        wrong = top[:, 0] != label
        sums["wrong"] += int(wrong.sum())
        sums["severity"] += int(h[:, 0][wrong].sum())
        for k in self.ks:
            sums["hd"][k] += int(h[:, :k].sum())
        if name == "plain":
            for k in self.ks:
                self.best_hd[k] += int(h[:, :k].min(1).values.sum())
            mistakes = h[:, 0][wrong]
            self.by_height += np.bincount(mistakes.numpy() - 1, minlength=len(self.by_height))[:len(self.by_height)]

    def compute(self) -> dict:
        n = self.images
        ece, mce = binned_calibration(np.concatenate(self.confidence), np.concatenate(self.correct)) if n else (None, None)
        record = {"ece": ece, "mce": mce, **({f"top{k}_acc": 100 * (self.top_hits[k] / n) for k in self.top_ks} if n else {}),
                  "hierarchy_name": None if self.tree is None else self.tree.name,
                  "mistake_severity": None, "hierarchical_distance": {}, "level_acc": {},
                  "hierarchical_distance_top": {}, "mistakes_by_height": [],
                  "test_error_crm": None, "mistake_severity_crm": None, "hierarchical_distance_crm": {}}
        if self.tree is None or not n:
            return record
        for name, suffix in (("plain", ""), ("crm", "_crm")):
            sums = self.sums[name]
            record[f"mistake_severity{suffix}"] = sums["severity"] / sums["wrong"] if sums["wrong"] else None
            record[f"hierarchical_distance{suffix}"] = {str(k): sums["hd"][k] / (n * k) for k in self.ks}
        record["hierarchical_distance_top"] = {str(k): self.best_hd[k] / n for k in self.ks}
        record["mistakes_by_height"] = self.by_height.tolist()
        record["test_error_crm"] = 100 * (self.sums["crm"]["wrong"] / n)
        names = [CLASS_LEVEL, *self.tree.level_names]
        record["level_acc"] = {name: 100 * (int(hits) / n) for name, hits in zip(names, self.level_hits)}
        return record


def mistake_record(scores: torch.Tensor, label: torch.Tensor, tree: Optional[ClassTree]) -> dict:
    """The ``metrics.json`` fields of this module from one protocol's scores (N, K) on the test split.

    The probabilities are softmax(scores). Without a tree only ``ece`` is defined (the rest is None or empty).
    """
    metrics = MistakeMetrics(tree, scores.shape[1])
    for start in range(0, len(label), CHUNK):
        metrics.update(scores[start:start + CHUNK], label[start:start + CHUNK])
    return metrics.compute()
