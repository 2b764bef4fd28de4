"""Image files in DataLoader workers, for the streaming data path (``src/data/streaming.py``): read and decoded
with ``torchvision.io`` (libjpeg-turbo), cropped with ``transforms.v2`` (the field's 224-px recipe: ``TrainCrop`` for
training, ``EvalCrop`` for evaluation), one line naming a file that cannot be read, and ``EpochSampler``: the files
sharded and shuffled per epoch as ``DistributedSampler`` does, seeded by seed + epoch.

``decode="reduced"`` (the default) decodes no more pixels than the crop needs: a JPEG whose crop box (training) or
short side (evaluation) is at least twice the output size is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
(libjpeg-turbo through PIL's ``draft``), then resized the rest of the way. The box is drawn from the full-size image
first, with the same numbers as ``decode="full"`` (today's path, the reference); an image that needs its full
scale is decoded and cropped exactly as there (docs/streaming.md: why PIL, and the pixel bound).
"""
import io
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler, default_collate
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


def _read_error(path: str, e: Exception) -> ImageReadError:
    return ImageReadError(f"cannot read image {path}: {' '.join(str(e).split()) or type(e).__name__}")


def read_image(path: str, data: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The RGB uint8 (3, H, W) image of a JPEG/PNG/GIF/WebP file (or of its bytes ``data``), decoded with
    torchvision.io."""
    try:
        return decode_image(read_file(str(path)) if data is None else data, mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        raise _read_error(path, e) from None


def read_bytes(path: str) -> torch.Tensor:
    """The file's bytes as a uint8 tensor of its own (``read_file``'s tensor wraps memory whose storage the
    DataLoader's queue cannot move to shared memory: ``OSError: [Errno 9] Bad file descriptor``, and a lost batch)."""
    try:
        return torch.from_numpy(np.fromfile(str(path), dtype=np.uint8))
    except (RuntimeError, OSError, ValueError) as e:
        raise _read_error(path, e) from None


DECODES = ("reduced", "full")
DCT_SCALES = (8, 4, 2)  # libjpeg's fast reductions; its N/8 ones (7/8, 3/4, ...) decode slower than full size here


def jpeg_size(data: torch.Tensor) -> Optional[tuple[int, int]]:
    """(height, width) from a JPEG's frame header if libjpeg can decode it to RGB at a reduced scale (1 or 3
    components), else None (not a JPEG, CMYK, or a header cut short: the full decode decides, and says why)."""
    b = data.numpy()
    if len(b) < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return None
    i = 2
    while i + 9 < len(b):
        if b[i] != 0xFF:
            return None
        marker = int(b[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = int(b[i + 5]) << 8 | int(b[i + 6]), int(b[i + 7]) << 8 | int(b[i + 8])
            components = int(b[i + 9])
            return (height, width) if components in (1, 3) and height and width else None
        i += 2 + (int(b[i + 2]) << 8 | int(b[i + 3]))
    return None


def reduction(size: tuple[int, int], needed: tuple[int, int]) -> int:
    """The largest DCT reduction d (8, 4, 2; else 1) keeping both sides of ``size`` / d >= ``needed``."""
    return next((d for d in DCT_SCALES if size[0] / d >= needed[0] and size[1] / d >= needed[1]), 1)


def decode_reduced(data: torch.Tensor, d: int, path: str) -> tuple[torch.Tensor, float, float]:
    """(the JPEG ``data`` decoded at 1/d in the DCT domain, uint8 (3, h, w), and its height and width ÷ the full
    size's). PIL's ``draft`` asks libjpeg-turbo for the reduced decode (docs/streaming.md: why PIL)."""
    try:
        with Image.open(io.BytesIO(data.numpy())) as image:
            width, height = image.size
            image.draft("RGB", (width // d, height // d))
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _read_error(path, e) from None
    with warnings.catch_warnings():  # read-only pixels: the crop only reads them
        warnings.simplefilter("ignore", UserWarning)
        # (3, h, w) as a view of the (h, w, 3) pixels: channels-last memory, torch's fast uint8 antialiased resize.
        out = torch.from_numpy(pixels).permute(2, 0, 1)
    return out, out.shape[1] / height, out.shape[2] / width


def resized_crop(image: torch.Tensor, top: int, left: int, h: int, w: int, size: int) -> torch.Tensor:
    """``TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)``, the same pixels; on the CPU the box
    of a uint8 image is first copied out as a channels-last block and the result stays channels-last.

    Why: a decoded JPEG is channels-last in memory, but the box is a strided view of it, so torch's uint8
    antialiased kernel (which works on interleaved pixels) takes its generic path and re-packs its output to
    planar (C, H, W); on the copied box it takes the fast one. 0.36 against 0.58 ms per image (minimum of 5 rounds,
    bench.stream's 500 × 375 JPEGs, 2-core Xeon VM under load, 2026-12-06). ``collate_images`` keeps the layout."""
    if image.device.type != "cpu" or image.dtype != torch.uint8 or image.ndim != 3:
        return TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    box = image[:, top:top + h, left:left + w]
    if (h, w) == (size, size):
        return box
    box = box.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    return F.interpolate(box, size=[size, size], mode="bilinear", align_corners=False, antialias=True)[0]


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
        return self.crop(image, self.box(*image.shape[-2:], rng), rng)

    def crop(self, image: torch.Tensor, box: tuple[int, int, int, int], rng: np.random.Generator,
             scale: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
        """The box (in full-size pixels) of ``image`` decoded at ``scale`` (its size ÷ the full size), resized."""
        top, left, h, w = box
        if scale != (1.0, 1.0):
            sy, sx = scale
            top, left = int(round(top * sy)), int(round(left * sx))
            h = min(int(round(h * sy)), image.shape[1] - top)
            w = min(int(round(w * sx)), image.shape[2] - left)
        out = resized_crop(image, top, left, h, w, self.image_size)
        return TF.horizontal_flip(out) if self.flip and rng.random() < 0.5 else out

    def from_file(self, path: str, rng: np.random.Generator) -> torch.Tensor:
        """As ``self(read_image(path), rng)``, the same box from the same draws, decoding at the DCT scale that
        keeps the box at least ``image_size`` on both sides."""
        data = read_bytes(path)
        size = jpeg_size(data)
        if size is None:
            return self(read_image(path, data), rng)
        box = self.box(*size, rng)
        d = reduction(box[2:], (self.image_size, self.image_size))
        if d == 1:
            return self.crop(read_image(path, data), box, rng)  # exactly decode="full"'s pixels
        decoded, sy, sx = decode_reduced(data, d, path)
        return self.crop(decoded, box, rng, (sy, sx))


class EvalCrop:
    """Resize the short side to ``resize_size`` (256), then the centre ``image_size`` (224) square (v2's
    ``Resize`` + ``CenterCrop``)."""

    def __init__(self, image_size: int, resize_size: int) -> None:
        self.image_size, self.resize_size = image_size, resize_size
        self.transform = v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(image_size)])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(image)

    def from_file(self, path: str) -> torch.Tensor:
        """As ``self(read_image(path))``, decoding at the DCT scale that keeps the short side >= resize_size."""
        data = read_bytes(path)
        size = jpeg_size(data)
        d = 1 if size is None else reduction((min(size),) * 2, (self.resize_size,) * 2)
        return self(read_image(path, data) if d == 1 else decode_reduced(data, d, path)[0])


def eval_transform(image_size: int, resize_size: int) -> EvalCrop:
    return EvalCrop(image_size, resize_size)


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


def collate_images(batch):
    """The DataLoader's ``default_collate``, the images stacked channels-last: (N, 3, H, W) as a view of one
    (N, H, W, 3) uint8 block (in shared memory in a worker). A decoded, cropped image is channels-last in memory, so
    each is one plain copy into the batch instead of a transposing one (0.02 against 0.13 ms per 224-px image, same
    machine and date as ``resized_crop``); with ``model.channels_last`` the model wants that layout anyway."""
    images, *rest = zip(*batch)
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
