"""The streaming data path, for data sets that do not fit in memory as one uint8 tensor (ImageNet-scale).

A concrete data set names its classes (``class_names``), optionally its own class tree (``tree``; its levels are
cases, as CIFAR-100's) and lists its files: ``samples(split)`` -> ``[(path, class index)]`` for ``train`` and
``test``. This class does the rest, with the in-memory path's contract (``InMemoryDataModule``):

- validation is carved out of train with a generator seeded by ``split_seed``, independent of the run seed;
- the superclass of every sample comes from ``self.superclasses`` (set by ``build()``), and batches are
  (image uint8 (B, 3, S, S), superclass, label), normalised on the training device (``on_after_batch_transfer``);
- ``splits[split]`` is (images, superclass, label) as there, but ``images`` is an ``ImageFiles``: indexing it
  decodes those files (the eval transform), so the callbacks' extra passes and the FLOP count work unchanged.

Files are read and decoded in DataLoader worker processes with ``torchvision.io`` (libjpeg-turbo), then
transformed with ``transforms.v2``: the field's 224-px recipe, RandomResizedCrop + flip for training (``TrainCrop``:
RandomResizedCrop's box, ``v2.functional.resized_crop``), Resize 256 + CenterCrop 224 for evaluation
(``EvalCrop``; ``image_size`` / ``resize_size`` scale it). ``decode="reduced"`` (default) decodes only the crop's
region of a JPEG, at 1/2, 1/4 or 1/8 scale where the crop allows (``src/data/crops.py``); ``decode="full"`` is the
reference. Batches cross from the workers in shared-memory blocks they reuse (``src/data/worker_loader.py``). An
image that cannot be read stops the run with one line naming the file; nothing is skipped. A worker that dies, or
sends no batch for ``worker_timeout_s``, stops the run with one line too (``WorkerError``), never a hang.

Order and randomness. Training files are sharded and shuffled by ``EpochSampler``, a ``DistributedSampler``
(Lightning leaves one as it is), seeded with the run seed + epoch: every rank draws the same permutation and
takes its share, and a run resumed at epoch e reads the files in the order an uninterrupted run reads them (the
epoch travels in the checkpoint as this datamodule's state: Lightning starts the training iterator, and the
workers take their first indices, before it restores the epoch counter).
Each training image's crop and flip are drawn from a generator seeded by (seed, epoch, index), so they do not
depend on the number of workers, on which worker reads the file, or on a resume.

``gpu_decode=true`` (CUDA only, checked in ``setup``): workers read the files' bytes (one uint8 tensor per batch,
``_collate_raw``) and the main process decodes each batch on the GPU with ``torchvision.io.decode_jpeg(list,
device="cuda")`` (nvJPEG, batched), then crops on the GPU. JPEG files only; the crops are then drawn from the
global RNG of the main process, not per image. The workers' side is tested on the CPU; the decoding needs a GPU.
"""
import logging
from collections.abc import Callable, Sequence
from typing import Optional, Union

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from src.data.crops import TrainCrop, eval_transform, region_decoder
from src.data.image_files import (DECODES, IMAGENET_MEAN, IMAGENET_STD, EpochSampler, ImageFiles, ImageReadError,
                                   StreamingConfigError, _collate_raw, collate_images, split_raw)
from src.data.pipeline import normalize
from src.data.tree import ClassTree
from src.data.worker_loader import WorkerLoader

log = logging.getLogger(__name__)
# How long the main process waits for a worker's batch before it stops the run. A batch of 128 large JPEGs takes
# seconds; minutes mean a worker is stuck or its batch was lost (a worker that exits is noticed within 5 s anyway).
WORKER_TIMEOUT_S = 600


class StreamingDataModule(pl.LightningDataModule):
    name: str = ""
    class_names: tuple[str, ...] = ()
    tree: Optional[ClassTree] = None  # the data set's own class tree; its levels are cases

    def __init__(
        self,
        name: Optional[str] = None,
        data_dir: str = "data",
        download: bool = False,
        batch_size: int = 64,
        eval_batch_size: int = 128,
        val_size: Union[int, float] = 0.1,
        split_seed: int = 0,
        image_size: int = 224,
        resize_size: Optional[int] = None,
        min_scale: float = 0.08,
        flip: bool = True,
        mean: Optional[Sequence[float]] = IMAGENET_MEAN,
        std: Optional[Sequence[float]] = IMAGENET_STD,
        num_workers: int = 2,
        pin_memory: bool = True,
        prefetch_factor: int = 4,
        persistent_workers: bool = True,
        gpu_decode: bool = False,
        pad: int = 0,
        on_device: bool = True,
        decode: str = "reduced",
        worker_timeout_s: float = WORKER_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.name = name or type(self).name
        if isinstance(val_size, float) and not 0 <= val_size < 1:
            raise StreamingConfigError(f"dataset.val_size as a fraction must be in [0, 1), got {val_size}")
        if image_size < 1 or (resize_size is not None and resize_size < image_size):
            raise StreamingConfigError(f"dataset.image_size must be >= 1 and dataset.resize_size >= image_size, "
                                       f"got {image_size} and {resize_size}")
        if not 0 < min_scale <= 1:
            raise StreamingConfigError(f"dataset.min_scale must be in (0, 1], got {min_scale}")
        if num_workers < 0 or prefetch_factor < 1:
            raise StreamingConfigError(f"dataset.num_workers must be >= 0 and dataset.prefetch_factor >= 1, "
                                       f"got {num_workers} and {prefetch_factor}")
        if decode not in DECODES:
            raise StreamingConfigError(f"dataset.decode must be one of {'|'.join(DECODES)}, got {decode!r}")
        if pad:
            raise StreamingConfigError(f"dataset.pad={pad}: the streaming path crops with RandomResizedCrop "
                                       f"(dataset.min_scale); set dataset.pad=0")
        if mean is None or std is None:
            raise StreamingConfigError("a streaming data set needs dataset.mean and dataset.std (measuring them "
                                       "would read every training image); ImageNet's are the default")
        self.data_dir, self.download = data_dir, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        # 256 for 224: torchvision's reference evaluation resize, scaled with image_size.
        self.image_size = image_size
        self.resize_size = resize_size if resize_size is not None else round(image_size * 256 / 224)
        self.min_scale, self.flip = min_scale, flip
        self.num_workers, self.pin_memory, self.prefetch_factor = num_workers, pin_memory, prefetch_factor
        self.persistent_workers, self.gpu_decode, self.on_device = persistent_workers, gpu_decode, on_device
        self.decode, self.worker_timeout_s = decode, worker_timeout_s
        self.mean = torch.tensor(list(mean), dtype=torch.float32)
        self.std = torch.tensor(list(std), dtype=torch.float32)
        self.superclasses: Optional[list[int]] = None
        self.resume_epoch = 0  # from a checkpoint (load_state_dict)
        self.splits: dict[str, tuple[ImageFiles, torch.Tensor, torch.Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def samples(self, split: str) -> list[tuple[str, int]]:
        """[(file path, class index)] of ``train`` or ``test``."""
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return 3, self.image_size, self.image_size

    def setup(self, stage: Optional[str] = None) -> None:
        if self.gpu_decode and not torch.cuda.is_available():  # before any worker starts
            raise StreamingConfigError("dataset.gpu_decode=true needs a CUDA device and there is none; "
                                       "set dataset.gpu_decode=false")
        if not self.splits:
            if self.decode == "reduced" and not self.gpu_decode and region_decoder() is None:
                log.warning("dataset.decode=reduced: the region JPEG decoder was not built at install (it needs a C "
                            "compiler and libjpeg headers: libjpeg-dev); decoding whole images")
            self.splits = self._split({split: self.samples(split) for split in ("train", "test")})

    def _split(self, data: dict[str, list[tuple[str, int]]]) -> dict[str, tuple[ImageFiles, torch.Tensor, torch.Tensor]]:
        train = data["train"]
        n_val = round(self.val_size * len(train)) if isinstance(self.val_size, float) else int(self.val_size)
        if not 0 <= n_val < len(train):
            raise StreamingConfigError(f"dataset.val_size={self.val_size} leaves no training data "
                                       f"({len(train)} images)")
        # As InMemoryDataModule: independent of the run seed, so every seed of a sweep sees the same validation.
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        parts = {"train": [train[i] for i in perm[n_val:]], "val": [train[i] for i in perm[:n_val]],
                 "test": data["test"]}
        table = torch.tensor(self.superclasses if self.superclasses is not None else [0] * self.num_classes)
        test_transform = eval_transform(self.image_size, self.resize_size)
        splits = {}
        for split, items in parts.items():
            label = torch.tensor([y for _, y in items], dtype=torch.long)
            if len(label) and not 0 <= int(label.min()) <= int(label.max()) < self.num_classes:
                raise StreamingConfigError(f"{self.name}: a {split} label is outside 0..{self.num_classes - 1}")
            files = ImageFiles([p for p, _ in items], table[label], label, test_transform, decode=self.decode)
            splits[split] = (files, files.superclass, label)
        return splits

    # -- loaders ---------------------------------------------------------------------------------------------

    def _epoch(self) -> Optional[Callable[[], int]]:
        trainer = self.trainer
        # Lightning creates the training iterator (and the workers take their first indices) while it counts the
        # steps of the run, before it restores a checkpoint's epoch: that epoch comes from this datamodule's state.
        return None if trainer is None else (lambda: max(trainer.current_epoch, self.resume_epoch))

    def state_dict(self) -> dict:
        trainer = self.trainer
        # Saved at the end of epoch e, "processed" is e + 1: the epoch a resumed run trains first.
        return {} if trainer is None else {"epoch": int(trainer.fit_loop.epoch_progress.current.processed)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.resume_epoch = int(state_dict.get("epoch", 0))

    def _shard(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: Dataset, batch_size: int, sampler: EpochSampler) -> DataLoader:
        workers = self.num_workers
        return WorkerLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          timeout=self.worker_timeout_s if workers else 0,
                          pin_memory=self.pin_memory and torch.cuda.is_available(),
                          prefetch_factor=self.prefetch_factor if workers else None,
                          persistent_workers=self.persistent_workers and workers > 0,
                          collate_fn=_collate_raw if self.gpu_decode else collate_images,
                          # The workers' base seed is drawn from this, not the global RNG: creating an iterator (after
                          # a resume too) leaves the run's random stream as an uninterrupted run has it.
                          generator=torch.Generator().manual_seed(self.split_seed))

    def train_dataloader(self) -> DataLoader:
        files = self.splits["train"][0]
        # The run seed (seed_everything has run): the same on every rank, and again after a resume.
        seed = torch.initial_seed()
        rank, world = self._shard()
        transform = None if self.gpu_decode else TrainCrop(self.image_size, self.min_scale, self.flip)
        return self._loader(files.with_transform(transform, seed, raw=self.gpu_decode), self.batch_size,
                            EpochSampler(len(files), rank, world, train=True, seed=seed, epoch=self._epoch()))

    def _eval_loader(self, split: str, shard: bool = True) -> DataLoader:
        files = self.splits[split][0]
        rank, world = self._shard() if shard else (0, 1)
        dataset = files.with_transform(None if self.gpu_decode else files.transform, raw=self.gpu_decode)
        return self._loader(dataset, self.eval_batch_size, EpochSampler(len(files), rank, world, train=False))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def eval_loader(self, split: str):
        """The whole split (no sharding), in order, decoded in the workers: the callbacks' extra passes."""
        loader = self._eval_loader(split, shard=False)
        return loader if not self.gpu_decode else (self._decode_on_gpu(batch, False) for batch in loader)

    # -- on the training device ------------------------------------------------------------------------------

    def _decode_on_gpu(self, batch, training: bool, device: Optional[torch.device] = None):
        files, superclass, label = batch
        files = split_raw(files)
        if device is None:  # bench.stream names it; in a run it is the trainer's
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type != "cuda":
            raise StreamingConfigError("dataset.gpu_decode=true needs a CUDA device; set it false on the CPU")
        try:
            images = decode_jpeg([data for data, _ in files], mode=ImageReadMode.RGB, device=device)  # batched nvJPEG
        except RuntimeError as e:  # nvJPEG does not say which image of the batch failed: find it on the CPU
            for data, path in files:
                try:
                    decode_jpeg(data, mode=ImageReadMode.RGB)
                except RuntimeError as cpu_error:
                    raise ImageReadError(f"cannot read image {path}: {' '.join(str(cpu_error).split())}") from None
            raise ImageReadError(f"cannot decode a batch of JPEGs on the GPU ({' '.join(str(e).split())}), though "
                                 f"each decodes on the CPU; set dataset.gpu_decode=false") from None
        if training:  # the crops from the main process's RNG (seeded by the run, restored on resume)
            crop = TrainCrop(self.image_size, self.min_scale, self.flip)
            rng = np.random.default_rng(int(torch.randint(2**62, ())))
            return torch.stack([crop(image, rng) for image in images]), superclass, label
        transform = eval_transform(self.image_size, self.resize_size)
        return torch.stack([transform(image) for image in images]), superclass, label

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if not self.gpu_decode:
            return batch
        return self._decode_on_gpu(batch, self.trainer is not None and self.trainer.training)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, superclass, label = batch
        if self.mean.device != images.device:
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        return normalize(images, self.mean, self.std), superclass, label
