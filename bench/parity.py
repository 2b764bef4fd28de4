"""Framework vs hand-written loop: training images/s of `train(cfg)` and of a minimal PyTorch loop.

Same model (pre-activation ResNet + auxiliary block, case1), same synthetic in-memory data, batch,
augmentation, optimiser, schedule and gradient clipping. The framework runs with its defaults
(logging, checkpoints, progress bar on). Epoch 0 is warm-up on both sides and not timed.

The two sides alternate for ``--rounds`` rounds (framework, then raw loop), each side on a fresh model with the
same warm-up; each round gives one ratio (framework images/s over raw images/s, measured seconds apart), and
``ratio`` is their median, beside ``ratio_min`` and ``ratio_max``. The raw loop uses ``build()`` only for the
data and the network; its training step is written out by hand.

    python -m bench.parity [--shape mnist cifar] [--epochs 3] [--rounds 5] [--num-train N] [--device cpu|cuda]
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from bench.common import SHAPES, emit, ratio_summary, sync, synthetic_overrides
from src.data.pipeline import augment, normalize
from src.train import build, train

WARMUP_EPOCHS = 1


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


class EpochTimer(pl.Callback):
    """Wall time from the start of the first timed epoch to the end of training."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.start, self.seconds = device, None, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == WARMUP_EPOCHS:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.start


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())


def raw_loop(cfg, device: torch.device, channels_last: bool, max_steps: int = None):
    """The hand-written reference. Returns (seconds over the timed epochs, per-step losses)."""
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)
    with tempfile.TemporaryDirectory() as tmp:
        datamodule, module, _ = build(cfg, Path(tmp))  # the same RNG draws in the same order as train(cfg)
    net = module.net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    images_all, superclass_all, label_all = (t.to(device) for t in datamodule.splits["train"])
    num_superclasses = net.auxiliary.num_superclasses if net.auxiliary is not None else 0
    mean, std = datamodule.mean.to(device), datamodule.std.to(device)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    batch, n = datamodule.batch_size, len(label_all)
    steps_per_epoch = -(-n // batch)
    total = cfg.trainer.max_epochs * steps_per_epoch
    if max_steps is not None:  # as Lightning's estimated_stepping_batches with max_steps
        total = min(total, max_steps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg.lr_min)
    amp = device.type == "cuda" and "bf16" in str(cfg.trainer.precision)
    features = torch.compile(net.forward_features) if cfg.compile else net.forward_features
    losses, start, step = [], None, 0
    net.train()
    for epoch in range(cfg.trainer.max_epochs):
        if epoch == WARMUP_EPOCHS:
            sync(device)
            start = time.perf_counter()
        order = torch.randperm(n, device=device)
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            images = normalize(augment(images_all[idx], datamodule.pad, datamodule.flip), mean, std)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            x_star = F.one_hot(superclass_all[idx], num_superclasses).float() if num_superclasses else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                h, extras = features(images)
                logits = net.forward_head(h, x_star, extras).logits
                loss = F.cross_entropy(logits, label_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.trainer.gradient_clip_val:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
            scheduler.step()
            if max_steps is not None:
                losses.append(loss.item())
                step += 1
                if step == max_steps:
                    return None, losses
    sync(device)
    return time.perf_counter() - start, losses


def framework(cfg, device: torch.device, run_dir: Path) -> float:

    timer = EpochTimer(device)
    run_dir.mkdir(parents=True)
    train(cfg, run_dir, callbacks=[timer])
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=["mnist", "cifar"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-train", type=int, nargs="+", default=None,
                        help="training images per shape (default: 12800 mnist, 3840 cifar on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (framework, then raw loop); >= 1")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both sides")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    device = torch.device(args.device)
    torch.set_float32_matmul_precision("high")
    defaults = {"mnist": 12800, "cifar": 3840} if device.type == "cpu" else {"mnist": 60000, "cifar": 50000}
    for i, shape in enumerate(args.shape):
        num_train = args.num_train[i] if args.num_train else defaults[shape]
        cfg = compose(synthetic_overrides(shape, num_train) + [
            f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            f"compile={args.compile}", *args.overrides])
        timed_images = (args.epochs - WARMUP_EPOCHS) * num_train
        seconds = {"framework": [], "raw": []}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                seconds["framework"].append(framework(cfg, device, Path(tmp) / f"run{r}"))
                seconds["raw"].append(raw_loop(cfg, device, cfg.channels_last)[0])
        emit({"bench": "parity", "shape": shape, "depth": SHAPES[shape][0], "device": str(device),
              "precision": str(cfg.trainer.precision), "threads": torch.get_num_threads(), "num_train": num_train,
              "timed_epochs": args.epochs - WARMUP_EPOCHS,
              "framework_img_s": round(timed_images / statistics.median(seconds["framework"]), 1),
              "raw_img_s": round(timed_images / statistics.median(seconds["raw"]), 1),
              **ratio_summary([raw / ours for ours, raw in zip(seconds["framework"], seconds["raw"])])})

if __name__ == "__main__":
    main()
