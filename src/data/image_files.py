"""Image files in DataLoader workers, for the streaming data path (``src/data/streaming.py``): read and decoded
with ``torchvision.io`` (libjpeg-turbo), cropped with ``transforms.v2`` (the field's 224-px recipe: ``TrainCrop`` for
training, ``EvalCrop`` for evaluation: ``src/data/crops.py``), one line naming a file that cannot be read, and ``EpochSampler``: the files
sharded and shuffled per epoch as ``DistributedSampler`` does, seeded by seed + epoch.

``decode="reduced"`` (the default) decodes no more pixels than the crop needs: a JPEG whose crop box (training) or
short side (evaluation) is at least twice the output size is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
(libjpeg-turbo through PIL's ``draft``), then resized the rest of the way. The box is drawn from the full-size image
first, with the same numbers as ``decode="full"`` (today's path, the reference); an image that needs its full
scale is decoded and cropped exactly as there (docs/streaming.md: why PIL, and the pixel bound).
"""
import logging
import os
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, default_collate
from torchvision.io import ImageReadMode, decode_image, read_file

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


def _read_error(path: str, e: Exception) -> ImageReadError:
    return ImageReadError(f"cannot read image {path}: {' '.join(str(e).split()) or type(e).__name__}")


def read_image(path: str, data: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The RGB uint8 (3, H, W) image of a JPEG/PNG/GIF/WebP file (or of its bytes ``data``), decoded with
    torchvision.io."""
    try:
        return decode_image(read_file(str(path)) if data is None else data, mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        raise _read_error(path, e) from None


def read_bytes(path: str, local: bool = False) -> torch.Tensor:
    """The file's bytes as a uint8 tensor of its own (``read_file``'s tensor wraps memory whose storage the
    DataLoader's queue cannot move to shared memory: ``OSError: [Errno 9] Bad file descriptor``, and a lost batch).
    ``local``: bytes that stay in this process (decoded here), read into a bytearray: 0.02 against 0.024-0.047 ms
    a 60 kB file here."""
    try:
        if local:
            with open(path, "rb", buffering=0) as f:
                data = bytearray(os.fstat(f.fileno()).st_size)
                f.readinto(data)
            return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        return torch.from_numpy(np.fromfile(str(path), dtype=np.uint8))
    except (RuntimeError, OSError, ValueError) as e:
        raise _read_error(path, e) from None


DECODES = ("reduced", "full")
def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training image's augmentation: the same in any worker, after any resume."""
    return np.random.default_rng([int(seed) % 2**64, int(epoch), int(index)])


class ImageFiles(Dataset):
    """Files with their superclass and label; ``dataset[i]`` -> (image, superclass, label).

    A key ``(i, epoch)`` (training, from ``EpochSampler``) calls the transform (a ``TrainCrop``) with
    ``sample_rng(seed, epoch, i)``; a plain ``i`` (evaluation) applies it (``EvalCrop``) as it is. ``decode``:
    "reduced" lets the transform decode at a DCT scale (``from_file``), "full" decodes every pixel first. With
    ``raw`` the image is (the file's bytes, its path), for GPU decoding.
    Indexing the object itself with a slice or index tensor (``files[rows]``) returns the stacked images.
    """

    device = torch.device("cpu")

    def __init__(self, paths: Sequence[str], superclass: torch.Tensor, label: torch.Tensor,
                 transform: Optional[Callable] = None, seed: int = 0, raw: bool = False,
                 decode: str = "reduced") -> None:
        if decode not in DECODES:
            raise StreamingConfigError(f"dataset.decode must be one of {'|'.join(DECODES)}, got {decode!r}")
        self.paths, self.superclass, self.label = list(paths), superclass, label
        self.transform, self.seed, self.raw, self.decode = transform, seed, raw, decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, (slice, torch.Tensor, list)):
            rows = range(len(self))[key] if isinstance(key, slice) else [int(i) for i in key]
            return torch.stack([self[i][0] for i in rows]) if len(rows) else torch.empty(0, dtype=torch.uint8)
        index, epoch = key if isinstance(key, tuple) else (key, None)
        if self.raw:
            return (read_bytes(self.paths[index]), self.paths[index]), self.superclass[index], self.label[index]
        path, transform = self.paths[index], self.transform
        args = () if epoch is None else (sample_rng(self.seed, epoch, index),)
        if transform is None:
            image = read_image(path)
        elif self.decode == "reduced" and hasattr(transform, "from_file"):
            image = transform.from_file(path, *args)
        else:
            image = transform(read_image(path), *args)
        return image, self.superclass[index], self.label[index]

    def with_transform(self, transform: Optional[Callable], seed: int = 0, raw: bool = False) -> "ImageFiles":
        return ImageFiles(self.paths, self.superclass, self.label, transform, seed, raw, self.decode)


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


def collate_images(batch, shared=None):
    """The DataLoader's ``default_collate``, the images stacked channels-last: (N, 3, H, W) as a view of one
    (N, H, W, 3) uint8 block (in shared memory in a worker). A decoded, cropped image is channels-last in memory, so
    each is one plain copy into the batch instead of a transposing one (0.02 against 0.13 ms per 224-px image, same
    machine and date as ``resized_crop``); with ``model.channels_last`` the model wants that layout anyway.
    ``shared`` (a ``SharedBatches``, in a worker): the block is one the worker reuses, and the batch is sent as a
    ``SlotBatch`` (``src/data/worker_loader.py``)."""
    images, *rest = zip(*batch)
    sent = None if shared is None else shared.stack(images, rest)
    if sent is not None:
        return sent
    stacked = default_collate([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return [stacked, *(default_collate(column) for column in rest)]


def _collate_raw(batch):
    """A batch of files' bytes as ONE uint8 tensor (one shared-memory block for the queue, not one per file) with
    each file's end offset and path; ``split_raw`` gives the files back."""
    files, superclass, label = zip(*batch)
    data = torch.cat([d for d, _ in files])
    ends = torch.tensor([len(d) for d, _ in files]).cumsum(0)
    return (data, ends, [p for _, p in files]), torch.stack(superclass), torch.stack(label)


def split_raw(files) -> list[tuple[torch.Tensor, str]]:
    """[(a file's bytes, its path)] of a ``_collate_raw`` batch."""
    data, ends, paths = files
    starts = [0, *ends[:-1].tolist()]
    return [(data[s:e], p) for s, e, p in zip(starts, ends.tolist(), paths)]
