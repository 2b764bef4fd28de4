"""Image files in DataLoader workers, for the streaming data path (``src/data/streaming.py``): read and decoded
with ``torchvision.io`` (libjpeg-turbo, not PIL), cropped with ``transforms.v2`` (the field's 224-px recipe:
``TrainCrop`` for training, ``eval_transform`` for evaluation), one line naming a file that cannot be read, and
``EpochSampler``: the files sharded and shuffled per epoch as ``DistributedSampler`` does, seeded by seed + epoch.
"""
import logging
import math
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from src.run.errors import UserError

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
