"""The streaming loader (src/data/streaming.py) on JPEGs of ImageNet's typical size, 500 × 375 px (``--size``), that
it writes.

Three ratios, measured in one run with the same files, the same number of DataLoader workers (``--workers``, 2
here) and the same batch size, alternating for ``--rounds`` rounds (each ratio is the median over the rounds):

- ``vs_imagefolder``: training images/s of the streaming loader (torchvision.io decode, RandomResizedCrop 224 +
  flip in the workers; uint8 batches out, normalised later on the training device) ÷ what a user would otherwise
  write, ``torchvision.datasets.ImageFolder`` + PIL + v2 RandomResizedCrop / RandomHorizontalFlip / ToImage /
  ToDtype / Normalize in the workers. Goal >= 1.3. ``vs_imagefolder_normalised_here`` counts the streaming
  loader's normalisation too, done here in the main process as CPU training does (on a GPU it is the GPU's).
- ``vs_decode_only``: ÷ ``decode_jpeg`` alone on the same files in the same workers (nothing else, nothing sent
  back but a number): the limit of this machine. Goal >= 0.8.
- ``vs_full_decode``: the streaming loader as configured (``--decode``, "reduced" by default) ÷ the same loader
  with ``dataset.decode=full``: what decoding only what the crop needs wins on these images.
- ``batch_transfer``: the uint8 batch the workers send (150 kB per 224-px image, stacked once into shared memory)
  against the float32 batch the ImageFolder recipe sends (602 kB per image): milliseconds per batch to stack it
  into a fresh shared-memory block (the DataLoader's collate), and MB per batch; ``uint8_reused_block``: into a block
  already mapped, as the streaming loader's workers do (src/data/worker_loader.py).
- ``gpu``: with a CUDA device, ``dataset.gpu_decode=true``'s images/s (workers read bytes, nvJPEG decodes the batch,
  the crops are cut on the GPU) and its ratio to the CPU loader; without one it says so.
- ``per_image_ms``: one core's milliseconds per training image, in this process (no DataLoader), minimum of
  ``--rounds``: reading + decoding the whole file (``decode_only``'s work), decoding only the crop's region (the
  compiled decoder, ``src/data/jpeg_roi.c``; null when it is not built), the resize of that region to 224 px, and
  ``TrainCrop.from_file`` whole (what a worker does per image, the batch aside).
- ``train_fed``: images/s of training steps (torchvision ResNet-18, SGD, ``--train-batch`` images of 224 px) fed
  by the streaming loader ÷ the same steps on the same batches already in memory: does the loader keep the model
  fed while its workers share the CPU with it?

    python -m bench.stream [--images 2000] [--workers 2] [--batch 64] [--rounds 3] [--decode reduced|full]
                           [--size 500x375] [--dir outputs/bench_stream]

The printed ``load_average`` (1-minute, before and after) says how busy the machine was: figures from a shared
machine are "under load".
"""
import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.io import decode_jpeg, encode_jpeg, read_file
from torchvision.transforms import v2

from bench.common import emit, ratio_summary
from src.data.folder_stream import StreamingFolderDataModule
from src.data.image_files import IMAGENET_MEAN, IMAGENET_STD

WIDTH, HEIGHT, CLASSES = 500, 375, 10


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_jpegs(root: Path, n: int) -> Path:
    """n photo-like JPEGs (a smooth colour field + a texture crop from one shared canvas, quality 90) of WIDTH ×
    HEIGHT in ImageFolder's root/train/<class>/ layout; kept between runs (a marker file says how many)."""
    marker = root / f".complete-{n}" if (WIDTH, HEIGHT) == (500, 375) else root / f".complete-{n}-{WIDTH}x{HEIGHT}"
    if marker.exists():
        return root
    g = torch.Generator().manual_seed(0)
    # One textured canvas (blurred noise), cut at a different place for each image: cheap on a busy machine.
    canvas = F.interpolate(torch.randn(1, 3, 3 * HEIGHT // 8, 3 * WIDTH // 8, generator=g), scale_factor=4,
                           mode="bilinear")[0].mul(28)
    y = torch.linspace(0, 1, HEIGHT).view(1, HEIGHT, 1)
    x = torch.linspace(0, 1, WIDTH).view(1, 1, WIDTH)
    for i in range(n):
        a, b, c = (torch.rand(3, 1, 1, generator=g) * 255 for _ in range(3))
        top = int(torch.randint(0, canvas.shape[1] - HEIGHT + 1, (1,), generator=g))
        left = int(torch.randint(0, canvas.shape[2] - WIDTH + 1, (1,), generator=g))
        image = (a * x + b * y + c * (1 - x) * y).div(2) + canvas[:, top:top + HEIGHT, left:left + WIDTH]
        path = root / "train" / f"c{i % CLASSES}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(image.clamp(0, 255).to(torch.uint8), quality=90).numpy().tobytes())
    for c in range(CLASSES):  # one test image per class: the datamodule wants a test split
        (root / "test" / f"c{c}").mkdir(parents=True, exist_ok=True)
        (root / "test" / f"c{c}" / "0.jpg").write_bytes((root / "train" / f"c{c}" / f"{c:05d}.jpg").read_bytes())
    marker.touch()
    return root


class DecodeOnly(Dataset):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        return decode_jpeg(read_file(self.paths[i])).shape[1]


def images_per_s(batches, normalise=None) -> float:
    start, n = time.perf_counter(), 0
    for batch in batches:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if normalise is not None:
            images = normalise(batch)[0]
        n += len(images)
    return n / (time.perf_counter() - start)


def first_then_time(loader, normalise=None) -> float:
    """images/s over one epoch after the workers have started (the first batch is warm-up)."""
    iterator = iter(loader)
    next(iterator)
    return images_per_s(iterator, normalise)


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def batch_transfer(batch: int, size: int = 224, repeats: int = 5) -> dict:
    """ms to stack a batch into shared memory as the DataLoader's collate does in a worker (a fresh block), uint8
    against float32, and uint8 into a block already mapped (the streaming loader's workers)."""
    def best_ms(stack) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            stack()
            best = min(best, time.perf_counter() - start)
        return round(1000 * best, 2)

    out = {}
    for name, dtype in (("uint8", torch.uint8), ("float32", torch.float32)):
        images = [torch.zeros(3, size, size, dtype=dtype) for _ in range(batch)]

        def stack(shared=None):  # one shared-memory block for the batch, each image copied in once
            if shared is None:
                shared = images[0].new_empty((0,)).untyped_storage()._new_shared(batch * images[0].nbytes)
            torch.stack(images, out=torch.empty(0, dtype=dtype).set_(shared).view(batch, 3, size, size))

        out[name] = {"ms_per_batch": best_ms(stack), "mb_per_batch": round(batch * images[0].nbytes / 1e6, 1)}
        if dtype == torch.uint8:
            block = images[0].new_empty((0,)).untyped_storage()._new_shared(batch * images[0].nbytes)
            out["uint8_reused_block"] = {"ms_per_batch": best_ms(lambda: stack(block))}
    return out


def per_image_ms(paths: list[str], rounds: int) -> dict:
    """ms per image of each stage on one core (the first 300 files), the minimum over ``rounds``."""
    from src.data.crops import TrainCrop, decode_region, jpeg_size, region_decoder, resized_crop
    from src.data.image_files import read_bytes, sample_rng

    paths, crop = paths[:300], TrainCrop(224)
    data = [read_bytes(p) for p in paths]
    boxes = [crop.box(*jpeg_size(d), sample_rng(0, 0, i)) for i, d in enumerate(data)]
    regions = [decode_region(d, 1, b, p) for d, b, p in zip(data, boxes, paths)]
    stages = {"read_and_decode_whole": lambda: [decode_jpeg(read_file(p)) for p in paths],
              "decode_region": lambda: [decode_region(d, 1, b, p) for d, b, p in zip(data, boxes, paths)],
              "resize_region": lambda: [resized_crop(r, 0, 0, *r.shape[1:], 224) for r in regions],
              "from_file": lambda: [crop.from_file(p, sample_rng(0, 0, i)) for i, p in enumerate(paths)]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(rounds):
        for name, stage in stages.items():
            start = time.perf_counter()
            stage()
            best[name] = min(best[name], time.perf_counter() - start)
    torch.set_num_threads(threads)
    out = {name: round(1000 * t / len(paths), 3) for name, t in best.items()}
    if region_decoder() is None:
        out["decode_region"] = None  # decode_region decoded whole images: not the region decoder's figure
    return out


def gpu_figures(root: Path, args, cpu_rate: float) -> object:
    if not torch.cuda.is_available():
        return "no CUDA device: not measured (dataset.gpu_decode=true needs one)"
    torch.manual_seed(0)
    dm = StreamingFolderDataModule(root=str(root), image_size=224, val_size=0, batch_size=args.batch,
                                   num_workers=args.workers, persistent_workers=False, gpu_decode=True)
    dm.setup()
    device = torch.device("cuda")
    rates = []
    for _ in range(args.rounds):
        batches = (dm._decode_on_gpu(batch, True, device) for batch in dm.train_dataloader())
        iterator = iter(batches)
        next(iterator)
        start, n = time.perf_counter(), 0
        for images, _, _ in iterator:
            n += len(images)
        torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
    rate = statistics.median(rates)
    return {"device": torch.cuda.get_device_name(), "images_per_s": round(rate, 1),
            "vs_cpu_streaming": round(rate / cpu_rate, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the training step")
    parser.add_argument("--decode", choices=("reduced", "full"), default="reduced", help="dataset.decode")
    parser.add_argument("--size", default="500x375", help="the JPEGs' WIDTHxHEIGHT")
    parser.add_argument("--dir", default="outputs/bench_stream", help="where the JPEGs are written (kept)")
    args = parser.parse_args()
    global WIDTH, HEIGHT
    try:
        WIDTH, HEIGHT = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size is WIDTHxHEIGHT, got {args.size!r}")
    if args.rounds < 1 or args.images < args.batch * 2 or args.workers < 1:
        parser.error("--rounds >= 1, --workers >= 1 and --images >= 2 × --batch")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    root = write_jpegs(Path(args.dir) if (WIDTH, HEIGHT) == (500, 375) else Path(args.dir) / args.size, args.images)

    def datamodule(decode: str) -> StreamingFolderDataModule:
        torch.manual_seed(0)
        dm = StreamingFolderDataModule(root=str(root), image_size=224, val_size=0, batch_size=args.batch,
                                       num_workers=args.workers, persistent_workers=False, decode=decode)
        dm.setup()
        return dm

    dm = datamodule(args.decode)
    streaming = dm.train_dataloader()
    streaming_full = datamodule("full").train_dataloader()
    paths = dm.splits["train"][0].paths
    user = ImageFolder(str(root / "train"), transform=v2.Compose([
        v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
    imagefolder = DataLoader(user, batch_size=args.batch, shuffle=True, num_workers=args.workers)
    decode = DataLoader(DecodeOnly(paths), batch_size=args.batch, shuffle=True, num_workers=args.workers)

    def normalise(batch):
        return dm.on_after_batch_transfer(batch, 0)

    # The training step: torchvision's ResNet-18, fed live by the streaming loader, or the same batches from memory.
    from torchvision.models import resnet18

    model = resnet18(num_classes=CLASSES).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_loader = DataLoader(dm.train_dataloader().dataset, batch_size=args.train_batch,
                              sampler=dm.train_dataloader().sampler, num_workers=args.workers, prefetch_factor=4)

    def step(images, labels):
        loss = F.cross_entropy(model(images.contiguous(memory_format=torch.channels_last)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def train_images_per_s(batches) -> float:
        start, n = time.perf_counter(), 0
        for images, _, labels in batches:
            step(images, labels)
            n += len(images)
        return n / (time.perf_counter() - start)

    def fed_live() -> tuple[float, list]:
        iterator, kept = iter(train_loader), []
        step(*normalise(next(iterator))[::2])  # warm-up: the workers start, the first step allocates

        def live():
            for _ in range(args.train_steps):
                batch = normalise(next(iterator))
                kept.append(batch)
                yield batch

        rate = train_images_per_s(live())
        del iterator
        return rate, kept

    rounds = {"streaming": [], "streaming_full_decode": [], "streaming_normalised_here": [], "imagefolder": [],
              "decode_only": [], "train_fed": [], "train_in_memory": []}
    for _ in range(args.rounds):
        # Each ratio's two sides back to back: a busy machine's load drifts less between them.
        rounds["streaming"].append(first_then_time(streaming))
        rounds["decode_only"].append(first_then_time(decode))
        rounds["streaming_full_decode"].append(first_then_time(streaming_full))
        rounds["imagefolder"].append(first_then_time(imagefolder))
        rounds["streaming_normalised_here"].append(first_then_time(streaming, normalise))
        fed, kept = fed_live()
        rounds["train_fed"].append(fed)
        rounds["train_in_memory"].append(train_images_per_s(kept))
    ratio = {
        "vs_imagefolder": [s / u for s, u in zip(rounds["streaming"], rounds["imagefolder"])],
        "vs_imagefolder_normalised_here": [s / u for s, u in zip(rounds["streaming_normalised_here"],
                                                                 rounds["imagefolder"])],
        "vs_decode_only": [s / d for s, d in zip(rounds["streaming"], rounds["decode_only"])],
        "vs_full_decode": [s / f for s, f in zip(rounds["streaming"], rounds["streaming_full_decode"])],
        "train_fed": [f / m for f, m in zip(rounds["train_fed"], rounds["train_in_memory"])],
    }
    gpu = gpu_figures(root, args, statistics.median(rounds["streaming"]))
    emit({"bench": "stream", "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "images": args.images,
          "load_average": [round(load_before, 2), round(load_average(), 2)], "decode": args.decode,
          "image_size": f"{WIDTH}x{HEIGHT}", "workers": args.workers, "batch_size": args.batch,
          "train_batch": args.train_batch, "train_steps": args.train_steps, "torch_threads": torch.get_num_threads(),
          "images_per_s": {k: round(statistics.median(v), 1) for k, v in rounds.items()},
          **{name: ratio_summary(values) for name, values in ratio.items()},
          "batch_transfer": batch_transfer(args.batch), "per_image_ms": per_image_ms(paths, args.rounds), "gpu": gpu})


if __name__ == "__main__":
    main()
