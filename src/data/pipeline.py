"""In-memory batch pipeline: uint8 image tensors, batch-wise augmentation on the training device.

The paper's datasets fit in memory, so there is no per-image PIL transform and no DataLoader worker:
a ``TensorLoader`` slices batches out of one tensor, and ``augment``/``normalize`` act on the whole
batch at once (pad 4 + random crop, random horizontal flip; paper section 4), on the CPU or the GPU.
"""
from collections.abc import Callable, Iterator, Sequence
from typing import Optional

import torch
import torch.nn.functional as F


class TensorLoader:
    """Batches of aligned tensors (images, superclasses, labels), optionally shuffled each epoch.

    With ``world_size`` > 1 each rank iterates over its own share, as ``DistributedSampler`` does:
    every rank draws the same permutation (identity without ``shuffle``) from a generator seeded with
    ``seed + epoch``. With ``pad_shards`` (training) the permutation's head is repeated up to a multiple
    of ``world_size`` and rank r takes every W-th index from r on, so every rank makes as many steps;
    without it (evaluation) rank r takes the block ``[n·r/W, n·(r+1)/W)``: every sample counted once.
    The epoch is ``epoch()`` (the datamodule passes the Trainer's, right after a resume too; default 0).
    No ``.sampler`` attribute: Lightning would then treat the
    loader as a DataLoader and look for the rest of one.

    With one process the permutation is drawn from torch's global RNG (seeded by the run seed) on the
    tensors' device, as it always was: single-process runs stay bit-identical.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, pad_shards: bool = False,
                 seed: Optional[int] = None, epoch: Optional[Callable[[], int]] = None) -> None:
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same length")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self.tensors, self.batch_size, self.shuffle, self.drop_last = tuple(tensors), batch_size, shuffle, drop_last
        self.rank, self.world_size, self.pad_shards = rank, world_size, pad_shards
        # Same on every rank: seed_everything seeds each rank's global RNG with the run seed.
        self.seed = torch.initial_seed() if seed is None else seed
        self.epoch = epoch or (lambda: 0)

    def _num_samples(self) -> int:
        n, w = len(self.tensors[0]), self.world_size
        if self.pad_shards:
            return -(-n // w)
        return n * (self.rank + 1) // w - n * self.rank // w

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _shard(self) -> Optional[torch.Tensor]:
        """This rank's indices into the tensors, or None for the plain slices 0..n of one process."""
        n, w, device = len(self.tensors[0]), self.world_size, self.tensors[0].device
        if w == 1:
            return torch.randperm(n, device=device) if self.shuffle else None
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch()))
        else:
            order = torch.arange(n)
        if self.pad_shards:
            total = self._num_samples() * w
            order = torch.cat([order, order.repeat(-(-total // max(n, 1)))[:total - n]]) if n else order
            order = order[self.rank:total:w]
        else:
            order = order[n * self.rank // w:n * (self.rank + 1) // w]
        return order.to(device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self._shard()
        for i in range(len(self)):
            if order is None:
                yield tuple(t[i * self.batch_size:(i + 1) * self.batch_size] for t in self.tensors)
            else:
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                # index_select, not t[idx]: advanced indexing is ~10x slower for this on the CPU.
                yield tuple(t.index_select(0, idx) for t in self.tensors)


def augment(images: torch.Tensor, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """The paper's training augmentation on a uint8 batch (B, C, H, W): zero-pad by ``pad`` and crop
    back to size at a random offset (torchvision's ``RandomCrop(size, padding=pad)``), then flip
    left-right with probability 1/2 (``RandomHorizontalFlip``), every image drawn independently.

    Both are one ``gather`` from the padded batch: a flipped crop reads its columns in reverse.
    """
    if pad == 0 and not flip:
        return images
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    hp, wp = h + 2 * pad, w + 2 * pad
    oy = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=device)
    ox = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=device)
    cols = torch.arange(w, device=device)
    if flip:
        cols = torch.where(torch.rand(b, 1, 1, device=device) < 0.5, cols.flip(0), cols)  # (B, 1, W)
    pixel = (oy + torch.arange(h, device=device).view(1, h, 1)) * wp + ox + cols  # (B, H, W) in the padded plane
    index = pixel[:, None] + (torch.arange(c, device=device) * hp * wp).view(1, c, 1, 1)
    return padded.reshape(b, -1).gather(1, index.view(b, -1)).view(b, c, h, w)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 standardised per channel; mean/std are in [0, 1] units."""
    scale, shift = 1 / (255 * std), -mean / std  # (x / 255 - mean) / std in one multiply-add
    return images.float().mul_(scale.view(1, -1, 1, 1)).add_(shift.view(1, -1, 1, 1))


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std, in [0, 1] units, of uint8 images (N, C, H, W).

    Summed in float64 chunks so a large dataset is never copied to float whole. A constant channel
    gets std 1/255 instead of 0, so normalising it stays finite.
    """
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].double()
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
    n = images.numel() // images.shape[1]
    mean = total / n
    std = (squares / n - mean**2).clamp(min=0).sqrt().clamp(min=1.0)
    return (mean / 255).float(), (std / 255).float()
