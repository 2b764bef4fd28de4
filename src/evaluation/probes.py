"""Stage probes: how well a linear classifier separates superclasses and classes at each stage, per epoch.

The measurement of Alsallakh et al. 2017, "Do Convolutional Neural Networks Learn Class Hierarchy?"
(arXiv 1710.06501): early layers separate groups of similar classes after a few epochs, later layers need
many more epochs to separate the classes themselves. After every training epoch ``StageProbes`` fits
closed-form ridge classifiers on the globally average-pooled output map of each stage k = 1, 2, 3 and logs

    probe/stage{k}_superclass_acc, probe/stage{k}_class_acc     (accuracy in %)

Like the callbacks of ``src/evaluation/callbacks.py`` it is an eval-mode, no-grad pass that changes no weight, no
BatchNorm statistic and no random state, and nothing it computes feeds back into training.
"""
import logging
from collections.abc import Sequence
from typing import Optional

import pytorch_lightning as pl
import torch

from src.evaluation.callbacks import eval_batches

log = logging.getLogger(__name__)

STAGES = (1, 2, 3)
HELD_OUT = "train (held out)"


# --- ridge probe: pure functions ------------------------------------------------------------------------

def fit_ridge(x: torch.Tensor, y: torch.Tensor, num_classes: int, lam: float) -> tuple[torch.Tensor, ...]:
    """Ridge regression onto one-hot targets: (mean, std, W) with W ((d+1), K) solving

        (X̃ᵀX̃ + λI₀) W = X̃ᵀY,    X̃ = [(x − mean) / std, 1],   Y = one_hot(y)

    where mean/std are those of ``x`` (the fit subset) and I₀ is the identity without the bias entry
    (the bias is not penalised). Float64 on the CPU: (d+1)² is at most a few hundred squared."""
    x = x.detach().to("cpu", torch.float64)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    design = _design(x, mean, std)
    penalty = torch.full((design.shape[1],), float(lam), dtype=torch.float64)
    penalty[-1] = 0.0
    target = torch.nn.functional.one_hot(y.detach().cpu().long(), num_classes).to(torch.float64)
    w = torch.linalg.solve(design.T @ design + torch.diag(penalty), design.T @ target)
    return mean, std, w


def predict_ridge(probe: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
    mean, std, w = probe
    return (_design(x.detach().to("cpu", torch.float64), mean, std) @ w).argmax(1)


def _design(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # A constant feature (a dead channel) has std 0: it becomes a zero column, which λ keeps solvable.
    z = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    return torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)


def probe_accuracy(x_fit: torch.Tensor, y_fit: torch.Tensor, x_score: torch.Tensor, y_score: torch.Tensor,
                   num_classes: int, lam: float) -> float:
    """Accuracy (%) on the score set of a ridge probe fitted on the fit set."""
    predicted = predict_ridge(fit_ridge(x_fit, y_fit, num_classes, lam), x_score)
    return 100.0 * (predicted == y_score.cpu()).double().mean().item()


def probe_subsets(n_train: int, n_val: int, fit_size: int, score_size: int,
                  seed: int) -> tuple[torch.Tensor, str, torch.Tensor]:
    """(fit indices into train, score split name, score indices into it), drawn from ``seed`` only.

    With a validation split the score set is up to ``score_size`` validation images. Without one it is a
    second set of training images, disjoint from the fit set; if train cannot hold both in full, the
    score set takes at most half of it and the fit set the rest.
    """
    generator = torch.Generator().manual_seed(seed)
    train_order = torch.randperm(n_train, generator=generator)
    if n_val > 0:
        fit = train_order[:min(fit_size, n_train)]
        score = torch.randperm(n_val, generator=generator)[:min(score_size, n_val)]
        return fit.sort().values, "val", score.sort().values
    n_score = min(score_size, n_train // 2)
    n_fit = min(fit_size, n_train - n_score)
    fit, score = train_order[:n_fit], train_order[n_fit:n_fit + n_score]
    return fit.sort().values, "train", score.sort().values


# --- the callback -------------------------------------------------------------------------------------

class StageProbes(pl.Callback):
    """Linear (ridge) superclass and class probes on the pooled output of each stage, after every epoch.

    Features: the output map of ``net.stages[k-1]``, captured with forward hooks while the module runs its
    normal forward with the true superclass fed as x*, averaged over H and W. Stage 3 is the map *before*
    the final BatchNorm/ReLU (every stage is probed at the same point: a stage's raw output). With the
    auxiliary block after stage p < 3, stage p's map is the one entering the block; later stages see the
    block's rescaled map, as the network computes it.

    Fit on ``fit_size`` training images, the same every epoch; scored on ``score_size`` validation images,
    or, with no validation split, on as many other training images (``self.split`` says which). The
    test split is never read. Superclass targets: the run's table (``datamodule.superclasses``), else
    ``hierarchy`` (the baseline's evaluation hierarchy), else only the class probes run.
    """

    def __init__(self, hierarchy: Optional[Sequence[int]] = None, fit_size: int = 2000, score_size: int = 1000,
                 lam: float = 1e-2, seed: int = 0) -> None:
        if fit_size < 1 or score_size < 1 or lam < 0:
            raise ValueError(f"StageProbes: fit_size and score_size must be >= 1 and lam >= 0, "
                             f"got {fit_size}, {score_size}, {lam}")
        self.hierarchy = None if hierarchy is None else list(hierarchy)
        self.fit_size, self.score_size, self.lam, self.seed = fit_size, score_size, lam, seed
        self.split: Optional[str] = None  # "validation" or "train (held out)", set when fitting starts
        self._fit_index = self._score_index = None
        self._score_split: Optional[str] = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        splits = trainer.datamodule.splits
        self._fit_index, self._score_split, self._score_index = probe_subsets(
            len(splits["train"][2]), len(splits["val"][2]), self.fit_size, self.score_size, self.seed)
        self.split = "validation" if self._score_split == "val" else HELD_OUT
        if self.split == HELD_OUT:
            log.info("stage probes: no validation split, scoring on %d held-out training images "
                     "(fitting on %d others)", len(self._score_index), len(self._fit_index))

    def _table(self, trainer: pl.Trainer) -> Optional[torch.Tensor]:
        table = trainer.datamodule.superclasses
        table = table if table is not None else self.hierarchy
        return None if table is None else torch.as_tensor(table, dtype=torch.long)

    def stage_features(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str,
                       index: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """({stage: pooled features (n, C_k) on the CPU}, labels (n,)) of ``index`` of the split."""
        stages = getattr(pl_module.net, "stage_numbers", STAGES)  # 1-4 on torchvision's ResNets
        captured: dict[int, list[torch.Tensor]] = {k: [] for k in stages}

        def hook(k):
            return lambda module, inputs, output: captured[k].append(output.float().mean((2, 3)).cpu())

        handles = [pl_module.net.stages[k - 1].register_forward_hook(hook(k)) for k in stages]
        labels = []
        try:
            for images, superclass, label in eval_batches(trainer, pl_module, split, index):
                pl_module(images, superclass)
                labels.append(label.cpu())
        finally:
            for handle in handles:
                handle.remove()
        return {k: torch.cat(v) for k, v in captured.items()}, torch.cat(labels)

    @property
    def record(self) -> dict:
        return {"probe_split": self.split}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x_fit, y_fit = self.stage_features(trainer, pl_module, "train", self._fit_index)
        x_score, y_score = self.stage_features(trainer, pl_module, self._score_split, self._score_index)
        table = self._table(trainer)
        targets = {"class": (y_fit, y_score, trainer.datamodule.num_classes)}
        if table is not None and int(table.max()) >= 1:
            targets["superclass"] = (table[y_fit], table[y_score], int(table.max()) + 1)
        for k in x_fit:
            for name, (fit, score, n) in targets.items():
                pl_module.log(f"probe/stage{k}_{name}_acc",
                              probe_accuracy(x_fit[k], fit, x_score[k], score, n, self.lam))
