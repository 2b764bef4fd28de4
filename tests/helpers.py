"""Helpers shared by the tests: compose the real configs the way `python -m src.train` does; hand-made run dirs."""
import csv
import json
from pathlib import Path

import pytorch_lightning as pl
import torch
import numpy as np
import torch.nn.functional as F
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import src  # noqa: F401  importing src registers the typed schema (base_config) that conf/config.yaml extends

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"

# Small and fast: a few epochs on digits without progress bars or checkpoints.
FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false",
        "trainer.accelerator=cpu"]


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
    out["label"], out["superclass"] = label, superclass
    net.train(was_training)
    return out


class HandScore(pl.Callback):
    """Keeps ``hand_scores`` of the final weights, taken when the test pass ends."""

    def __init__(self, table=None, rows: int = None):
        self.table, self.rows, self.scores, self.val = table, rows, None, None

    def on_test_end(self, trainer, pl_module):
        self.scores = hand_scores(pl_module.net, trainer.datamodule, self.table, rows=self.rows)
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
