"""The streaming data path, for data sets that do not fit in memory as one uint8 tensor (ImageNet-scale).

A concrete data set names its classes (``class_names``), optionally its own class tree (``tree``; its levels are
cases, as CIFAR-100's) and lists its files: ``samples(split)`` -> ``[(path, class index)]`` for ``train`` and
``test``. This class does the rest, with the in-memory path's contract (``InMemoryDataModule``):

- validation is carved out of train with a generator seeded by ``split_seed``, independent of the run seed;
- the superclass of every sample comes from ``self.superclasses`` (set by ``build()``), and batches are
  (image uint8 (B, 3, S, S), superclass, label), normalised on the training device (``on_after_batch_transfer``);
- ``splits[split]`` is (images, superclass, label) as there, but ``images`` is an ``ImageFiles``: indexing it
  decodes those files (the eval transform), so the callbacks' extra passes and the FLOP count work unchanged.

Files are read and decoded in DataLoader worker processes with ``torchvision.io`` (libjpeg-turbo, not PIL), then
transformed with ``transforms.v2``: the field's 224-px recipe, RandomResizedCrop + flip for training (``TrainCrop``:
RandomResizedCrop's box, ``v2.functional.resized_crop``), Resize 256 + CenterCrop 224 for evaluation
(``image_size`` / ``resize_size`` scale it). An image that cannot be read stops the
run with one line naming the file; nothing is skipped.

Order and randomness. Training files are sharded and shuffled by ``EpochSampler``, a ``DistributedSampler``
(Lightning leaves one as it is), seeded with the run seed + epoch: every rank draws the same permutation and
takes its share, and a run resumed at epoch e reads the files in the order an uninterrupted run reads them (the
epoch travels in the checkpoint as this datamodule's state: Lightning starts the training iterator, and the
workers take their first indices, before it restores the epoch counter).
Each training image's crop and flip are drawn from a generator seeded by (seed, epoch, index), so they do not
depend on the number of workers, on which worker reads the file, or on a resume.

``gpu_decode=true`` (CUDA only): workers read the files' bytes and the main process decodes each batch on the
GPU with ``torchvision.io.decode_jpeg(list, device="cuda")`` (nvJPEG, batched), then crops on the GPU. JPEG files
only; the crops are then drawn from the global RNG of the main process, not per image. Not tested on CPU.
"""
import logging
import math
from collections.abc import Callable, Sequence
from typing import Optional, Union

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from src.data.pipeline import normalize
from src.run.errors import UserError
from src.data.tree import ClassTree

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, used by the field's recipes
IMAGENET_STD = (0.229, 0.224, 0.225)


class StreamingConfigError(UserError, ValueError):
    """A streaming option is out of range (one line)."""


class ImageReadError(UserError):
    """An image file is missing, unreadable or corrupt: one line naming the file.

    A DataLoader worker's exception is re-raised in the main process as ``type(e)(message + traceback)``;
    the constructor keeps only the original one-line message."""

    def __init__(self, message: str) -> None:
        lines = [line for line in str(message).strip().splitlines() if line.strip()]
        line = lines[-1] if lines else str(message)
        super().__init__(line.split(f"{type(self).__name__}: ", 1)[-1])


def read_image(path: str) -> torch.Tensor:
    """The RGB uint8 (3, H, W) image of a JPEG/PNG/GIF/WebP file, decoded with torchvision.io."""
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {' '.join(str(e).split()) or type(e).__name__}") from None


def read_bytes(path: str) -> torch.Tensor:
    try:
        return read_file(str(path))
    except (RuntimeError, OSError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {' '.join(str(e).split()) or type(e).__name__}") from None


class TrainCrop:
    """The field's training augmentation: ``transforms.v2.RandomResizedCrop(image_size, scale=(min_scale, 1),
    ratio=(3/4, 4/3))`` then ``RandomHorizontalFlip()``, with RandomResizedCrop's own choice of the box (ten tries
    of an area fraction and a log-uniform aspect ratio, then the central crop of the clamped ratio) applied with
    ``transforms.v2.functional.resized_crop`` (antialiased).

    The draws come from a numpy generator handed in per image, ``sample_rng(seed, epoch, index)``: the same crop
    in any worker and after a resume, and no reseeding of torch's 5 KB Mersenne state per image (0.4 ms, a fifth of
    a 500 × 375 JPEG's decoding time here)."""

    RATIO = (3 / 4, 4 / 3)

    def __init__(self, image_size: int, min_scale: float = 0.08, flip: bool = True) -> None:
        self.image_size, self.min_scale, self.flip = image_size, min_scale, flip

    def box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, h, w), as ``v2.RandomResizedCrop`` draws it."""
        area = height * width
        log_ratio = (math.log(self.RATIO[0]), math.log(self.RATIO[1]))
        for _ in range(10):
            target = area * rng.uniform(self.min_scale, 1.0)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        ratio = width / height
        if ratio < self.RATIO[0]:
            w, h = width, int(round(width / self.RATIO[0]))
        elif ratio > self.RATIO[1]:
            h, w = height, int(round(height * self.RATIO[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        top, left, h, w = self.box(*image.shape[-2:], rng)
        out = TF.resized_crop(image, top, left, h, w, [self.image_size, self.image_size], antialias=True)
        return TF.horizontal_flip(out) if self.flip and rng.random() < 0.5 else out


def eval_transform(image_size: int, resize_size: int) -> v2.Transform:
    """Resize the short side to ``resize_size`` (256), then the centre ``image_size`` (224) square."""
    return v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size)])


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training image's augmentation: the same in any worker, after any resume."""
    return np.random.default_rng([int(seed) % 2**64, int(epoch), int(index)])


class ImageFiles(Dataset):
    """Files with their superclass and label; ``dataset[i]`` -> (image, superclass, label).

    A key ``(i, epoch)`` (training, from ``EpochSampler``) calls the transform (a ``TrainCrop``) with
    ``sample_rng(seed, epoch, i)``; a plain ``i`` (evaluation) applies it (``eval_transform``) as it is. With ``raw`` the image is (the file's bytes, its path), for GPU decoding.
    Indexing the object itself with a slice or index tensor (``files[rows]``) returns the stacked images.
    """

    device = torch.device("cpu")

    def __init__(self, paths: Sequence[str], superclass: torch.Tensor, label: torch.Tensor,
                 transform: Optional[v2.Transform] = None, seed: int = 0, raw: bool = False) -> None:
        self.paths, self.superclass, self.label = list(paths), superclass, label
        self.transform, self.seed, self.raw = transform, seed, raw

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, (slice, torch.Tensor, list)):
            rows = range(len(self))[key] if isinstance(key, slice) else [int(i) for i in key]
            return torch.stack([self[i][0] for i in rows]) if len(rows) else torch.empty(0, dtype=torch.uint8)
        index, epoch = key if isinstance(key, tuple) else (key, None)
        if self.raw:
            return (read_bytes(self.paths[index]), self.paths[index]), self.superclass[index], self.label[index]
        image = read_image(self.paths[index])
        if self.transform is not None:
            if epoch is None:
                image = self.transform(image)
            else:
                image = self.transform(image, sample_rng(self.seed, epoch, index))
        return image, self.superclass[index], self.label[index]

    def with_transform(self, transform: Optional[v2.Transform], seed: int = 0, raw: bool = False) -> "ImageFiles":
        return ImageFiles(self.paths, self.superclass, self.label, transform, seed, raw)


class EpochSampler(DistributedSampler):
    """``DistributedSampler``'s shard of the indices, as Lightning would insert one, but made here so that it
    exists with one process too and so that Lightning (which sets its epoch) leaves it as it is.

    Training (``train=True``): exactly DistributedSampler's indices (a permutation from ``seed + epoch``, padded
    by its head to a multiple of the world size, every W-th from the rank on), yielded as ``(index, epoch)`` so
    the dataset can seed the augmentation. Evaluation: rank r takes the block ``[n·r/W, n·(r+1)/W)`` in order,
    no padding, so every sample is counted once (as the in-memory ``TensorLoader`` does). ``epoch``: the
    datamodule passes the Trainer's ``current_epoch``."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, train: bool = True, seed: int = 0,
                 epoch: Optional[Callable[[], int]] = None) -> None:
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=train, seed=seed, drop_last=False)
        self.n, self.train, self.current_epoch = n, train, epoch

    def __iter__(self):
        if self.train:
            if self.current_epoch is not None:
                # The Trainer's epoch, right after a resume too (Lightning's own set_epoch counts differently there).
                self.set_epoch(self.current_epoch())
            epoch = self.epoch
            return ((i, epoch) for i in super().__iter__())
        n, r, w = self.n, self.rank, self.num_replicas
        return iter(range(n * r // w, n * (r + 1) // w))

    def __len__(self) -> int:
        if self.train:
            return super().__len__()
        n, r, w = self.n, self.rank, self.num_replicas
        return n * (r + 1) // w - n * r // w


def _collate_raw(batch):
    data, superclass, label = zip(*batch)
    return list(data), torch.stack(superclass), torch.stack(label)


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
        if not self.splits:
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
            files = ImageFiles([p for p, _ in items], table[label], label, test_transform)
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
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=self.pin_memory and torch.cuda.is_available(),
                          prefetch_factor=self.prefetch_factor if workers else None,
                          persistent_workers=self.persistent_workers and workers > 0,
                          collate_fn=_collate_raw if self.gpu_decode else None,
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

    def _decode_on_gpu(self, batch, training: bool):
        files, superclass, label = batch
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
