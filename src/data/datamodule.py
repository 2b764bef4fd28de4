"""The LightningDataModule shared by every dataset: uint8 tensors in memory, superclasses attached.

A concrete dataset only implements ``load()`` (and names its classes). This class carves the
validation split out of train with a generator independent of the run seed, attaches the
superclass of every sample, serves (image, superclass, label) batches from ``TensorLoader`` and
augments + normalises whole batches on the training device in ``on_after_batch_transfer``.
"""
from typing import Optional, Sequence, Union

import pytorch_lightning as pl
import torch

from src.data.pipeline import TensorLoader, augment, channel_stats, normalize
from src.run.errors import UserError
from src.data.tree import ClassTree


class DataConfigError(UserError, ValueError):
    """A dataset option is out of range (message is one line, fit for the user)."""


class InMemoryDataModule(pl.LightningDataModule):
    name: str = ""
    class_names: tuple[str, ...] = ()
    tree: Optional[ClassTree] = None  # the dataset's own class tree (CIFAR-100's); its levels are cases

    def __init__(
        self,
        name: Optional[str] = None,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 512,
        val_size: Union[int, float] = 0.1,
        split_seed: int = 0,
        pad: int = 4,
        flip: bool = True,
        mean: Optional[Sequence[float]] = (0.5,),
        std: Optional[Sequence[float]] = (0.5,),
        download: bool = True,
        on_device: bool = True,
    ) -> None:
        super().__init__()
        self.name = name or type(self).name  # the config's dataset.name: records and reports use it
        if isinstance(val_size, float) and not 0 <= val_size < 1:
            raise DataConfigError(f"dataset.val_size as a fraction must be in [0, 1), got {val_size}")
        if (mean is None) != (std is None):
            raise DataConfigError("dataset.mean and dataset.std must both be given or both be null")
        self.data_dir, self.download = data_dir, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.pad, self.flip, self.on_device = pad, flip, on_device
        # null mean/std: measured on the training split in setup() (never on val or test).
        self.mean = None if mean is None else torch.tensor(list(mean), dtype=torch.float32)
        self.std = None if std is None else torch.tensor(list(std), dtype=torch.float32)
        self.superclasses: Optional[list[int]] = None  # class -> superclass table; None for the baseline
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{'train': (images uint8 (N, C, H, W), labels int64 (N,)), 'test': (...)}."""
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.splits:
            self.splits = self._split(self.load())
            if self.mean is None:
                self.mean, self.std = channel_stats(self.splits["train"][0])
        if self.on_device and self.trainer is not None:
            # Once, not per batch: batches are then sliced, augmented and normalised where the model
            # runs, with no host copy per step. A no-op when the data is already there (e.g. CPU).
            device = self.trainer.strategy.root_device
            self.splits = {k: tuple(t.to(device) for t in v) for k, v in self.splits.items()}

    def _split(self, data: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        train_x, train_y = data["train"]
        n_val = round(self.val_size * len(train_x)) if isinstance(self.val_size, float) else int(self.val_size)
        if not 0 <= n_val < len(train_x):
            raise DataConfigError(f"dataset.val_size={self.val_size} leaves no training data ({len(train_x)} samples)")
        # Independent of the run seed: every seed of a sweep sees the same validation images.
        perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(self.split_seed))
        parts = {"train": (train_x[perm[n_val:]], train_y[perm[n_val:]]),
                 "val": (train_x[perm[:n_val]], train_y[perm[:n_val]]),
                 "test": data["test"]}
        table = torch.tensor(self.superclasses if self.superclasses is not None else [0] * self.num_classes)
        return {k: (x.contiguous(), table[y], y) for k, (x, y) in parts.items()}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        self.setup()
        return tuple(self.splits["train"][0].shape[1:])

    def _shard(self) -> dict:
        """This process's rank and the world size, from the Trainer (DDP); one process without one.
        Lightning leaves a loader that is not a DataLoader as it is: TensorLoader shards itself."""
        if self.trainer is None:
            return {}
        trainer = self.trainer
        return {"rank": trainer.global_rank, "world_size": trainer.world_size, "epoch": lambda: trainer.current_epoch}

    def train_dataloader(self) -> TensorLoader:
        return TensorLoader(self.splits["train"], self.batch_size, shuffle=True, drop_last=False,
                            pad_shards=True, **self._shard())

    def val_dataloader(self) -> TensorLoader:
        # Empty with val_size=0 (the paper's protocol); train() then turns the validation loop off.
        return TensorLoader(self.splits["val"], self.eval_batch_size, **self._shard())

    def test_dataloader(self) -> TensorLoader:
        return TensorLoader(self.splits["test"], self.eval_batch_size, **self._shard())

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, superclass, label = batch
        if self.mean.device != images.device:
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        if self.trainer is not None and self.trainer.training:
            images = augment(images, self.pad, self.flip)
        return normalize(images, self.mean, self.std), superclass, label
