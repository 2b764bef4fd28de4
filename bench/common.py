"""Shared bench helpers: synthetic in-memory data of a chosen shape, and JSON output."""
import json
import statistics
import sys

import torch

from src.data.datamodule import InMemoryDataModule


class SyntheticDataModule(InMemoryDataModule):
    """Random uint8 images with random labels (10 classes): the shape of MNIST or CIFAR-10, no files."""

    name = "synthetic"
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, num_train: int = 4096, num_test: int = 1024, image_size: int = 32, channels: int = 3,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_train, self.num_test, self.image_size, self.channels = num_train, num_test, image_size, channels

    def load(self):
        g = torch.Generator().manual_seed(1234)
        shape = (self.channels, self.image_size, self.image_size)

        def part(n):
            return (torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g))

        return {"train": part(self.num_train), "test": part(self.num_test)}


# name -> (depth, image size, channels): the paper's two settings.
SHAPES = {"mnist": (10, 28, 1), "cifar": (28, 32, 3)}


def synthetic_overrides(shape: str, num_train: int, num_test: int = 512) -> list[str]:
    depth, size, channels = SHAPES[shape]
    return ["dataset._target_=bench.common.SyntheticDataModule", f"+dataset.num_train={num_train}",
            f"+dataset.num_test={num_test}", f"+dataset.image_size={size}", f"+dataset.channels={channels}",
            f"dataset.mean={[0.5] * channels}", f"dataset.std={[0.25] * channels}", "dataset.val_size=0",
            "dataset.pad=4", "dataset.flip=true", f"depth={depth}"]


def sync(device: torch.device) -> None:
    """Wait for the GPU before reading a clock (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit(record: dict) -> None:
    print(json.dumps(record, indent=2))
    sys.stdout.flush()


def ratio_summary(ratios: list[float]) -> dict:
    """The per-round ratios of an alternating benchmark: their median as ``ratio`` (robust to one round that
    a change of load slowed), the extremes, and every round."""
    return {"ratio": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3), "rounds": len(ratios), "ratio_by_round": [round(r, 3) for r in ratios]}
