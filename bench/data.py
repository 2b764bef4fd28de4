"""Data pipeline throughput: the in-memory pipeline against torchvision's usual per-image DataLoader.

Both produce training batches of 128 normalised, augmented (pad 4 + random crop, random horizontal
flip) CIFAR-shaped images from the same synthetic uint8 data, with no model behind them, alternating for
``--rounds`` rounds (in-memory, then each ``--workers`` value); ``ratio`` is the median of the per-round
speed-ups (in-memory over the round's fastest DataLoader), beside ``ratio_min`` and ``ratio_max``:

- ``in_memory``: how training runs here. ``TensorLoader`` slices shuffled batches out of one uint8
  tensor and the datamodule's ``on_after_batch_transfer`` augments and normalises the whole batch.
- ``torchvision``: a PIL-backed dataset like ``torchvision.datasets.CIFAR10`` with
  ``Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize(...)])`` per image,
  in a ``DataLoader`` (shuffle, batch 128), once per ``--workers`` value; the ratio is against the fastest.

    python -m bench.data [--num-images 20000] [--workers 0 2] [--rounds 5] [--device cpu|cuda] [--threads N]
"""
import argparse
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench.common import SyntheticDataModule, emit, ratio_summary, sync

BATCH = 128
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class PILDataset(Dataset):
    """What torchvision's CIFAR10 does per item: an HWC uint8 array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def in_memory_images_per_s(dm: SyntheticDataModule, device: torch.device) -> float:
    # Attach a stand-in trainer that is "training" on `device`, so setup() places the data there
    # (on_device) and the hook augments, as during fit.
    dm.trainer = SimpleNamespace(training=True, strategy=SimpleNamespace(root_device=device), global_rank=0,
                                 world_size=1, current_epoch=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    dm.on_after_batch_transfer(next(iter(loader)), 0)  # warm-up
    sync(device)
    start, n = time.perf_counter(), 0
    for batch in loader:
        images, _, _ = dm.on_after_batch_transfer(batch, 0)
        n += len(images)
    sync(device)
    return n / (time.perf_counter() - start)


def torchvision_images_per_s(images: np.ndarray, labels: np.ndarray, workers: int) -> float:
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = DataLoader(PILDataset(images, labels, transform), batch_size=BATCH, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0)
    next(iter(loader))  # warm-up (starts the workers when persistent)
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=20000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, min(2, os.cpu_count() or 1)])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; >= 1")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core); 1 is faster on a busy machine")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    dm = SyntheticDataModule(num_train=args.num_images, num_test=BATCH, image_size=32, channels=3,
                             batch_size=BATCH, val_size=0, pad=4, flip=True, mean=MEAN, std=STD)
    dm.setup()
    images, _, labels = dm.splits["train"]
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()  # the same pixels, as torchvision stores them

    in_memory, per_image = [], {str(w): [] for w in args.workers}
    for _ in range(args.rounds):
        in_memory.append(in_memory_images_per_s(dm, torch.device(args.device)))
        for w in args.workers:
            per_image[str(w)].append(torchvision_images_per_s(hwc, labels.numpy(), w))
    median = {w: statistics.median(v) for w, v in per_image.items()}
    best = max(median, key=median.get)
    emit({"bench": "data", "batch_size": BATCH, "num_images": args.num_images, "device": args.device,
          "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
          "in_memory_images_per_s": round(statistics.median(in_memory)),
          "torchvision_images_per_s_by_workers": {w: round(v) for w, v in median.items()},
          "torchvision_best_workers": int(best),
          **ratio_summary([ours / max(v[r] for v in per_image.values()) for r, ours in enumerate(in_memory)])})

if __name__ == "__main__":
    main()
