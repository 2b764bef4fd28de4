"""In-memory batch pipeline: uint8 image tensors, batch-wise augmentation on the training device.

The paper's datasets fit in memory, so there is no per-image PIL transform and no DataLoader worker:
a ``TensorLoader`` slices batches out of one tensor, and ``augment``/``normalize`` act on the whole
batch at once (pad 4 + random crop, random horizontal flip; paper section 4), on the CPU or the GPU.
"""
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F


class TensorLoader:
    """Batches of aligned tensors (images, superclasses, labels), optionally shuffled each epoch.

    The permutation is drawn from torch's global RNG (seeded by the run seed) on the tensors' device.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool = False,
                 drop_last: bool = False) -> None:
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same length")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors, self.batch_size, self.shuffle, self.drop_last = tuple(tensors), batch_size, shuffle, drop_last

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n, device = len(self.tensors[0]), self.tensors[0].device
        order = torch.randperm(n, device=device) if self.shuffle else None
        for i in range(len(self)):
            if order is None:
                yield tuple(t[i * self.batch_size:(i + 1) * self.batch_size] for t in self.tensors)
            else:
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield tuple(t[idx] for t in self.tensors)


def random_crop(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by ``pad`` on each side, then crop each image back to size at a random offset.

    Same result as torchvision's ``RandomCrop(size, padding=pad)`` per image, done with one gather.
    """
    if pad == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b, 1), device=images.device)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), device=images.device)
    rows = (oy + torch.arange(h, device=images.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox + torch.arange(w, device=images.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


def random_flip(images: torch.Tensor) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def augment(images: torch.Tensor, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """The paper's training augmentation on a uint8 batch (B, C, H, W)."""
    images = random_crop(images, pad)
    return random_flip(images) if flip else images


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 standardised per channel; mean/std are in [0, 1] units."""
    return (images.float().div_(255) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


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
