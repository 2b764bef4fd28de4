"""The streaming data path (src/data/streaming.py) on small JPEG folders: batches, transforms, order, sharding,
per-image seeds, corrupt files, and a run killed mid-epoch that resumes to the uninterrupted result."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler
from torchvision.io import decode_image
from torchvision.transforms import v2

import stream_files as sf
from helpers import FAST, compose_cfg

from src.data.folder_stream import StreamingFolderDataModule, folder_datamodule
from src.data.folder import FolderDataModule
from src.data.crops import TrainCrop
from src.data.image_files import EpochSampler, ImageReadError, StreamingConfigError, sample_rng
from src.run.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def folder(root: Path, classes: int = 3, train: int = 8, test: int = 3) -> Path:
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            for i in range(n):
                sf.jpeg(root / split / f"c{c}" / f"{i}.jpg", c, hash((split, c, i)) % 2**31, size=(24 + c, 20 + i))
    return root


def module(root: Path, **kwargs) -> StreamingFolderDataModule:
    args = dict(root=str(root), image_size=12, val_size=4, num_workers=0, batch_size=5, eval_batch_size=7)
    dm = StreamingFolderDataModule(**{**args, **kwargs})
    dm.superclasses = [0, 1, 1]
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return folder(tmp_path_factory.mktemp("stream") / "imgs")


def test_splits_hold_files_labels_and_superclasses_and_val_ignores_the_run_seed(images):
    torch.manual_seed(1)
    first = module(images)
    torch.manual_seed(2)
    second = module(images)
    files, superclass, label = first.splits["train"]
    assert (len(files), len(first.splits["val"][2]), len(first.splits["test"][2])) == (20, 4, 9)
    assert torch.equal(superclass, torch.tensor([0, 1, 1])[label])
    assert all(Path(p).parent.name == f"c{y}" for p, y in zip(files.paths, label.tolist()))
    assert first.splits["val"][0].paths == second.splits["val"][0].paths  # split_seed, not the run seed
    other = module(images, split_seed=1)
    assert other.splits["val"][0].paths != first.splits["val"][0].paths
    assert first.image_shape == (3, 12, 12)


def test_evaluation_images_are_torchvisions_resize_and_centre_crop_of_the_decoded_file(images):
    dm = module(images, image_size=12, resize_size=16)
    files = dm.splits["test"][0]
    batch = files[2:5]
    for path, got in zip(files.paths[2:5], batch):
        decoded = decode_image(path)
        expected = v2.CenterCrop(12)(v2.Resize(16, antialias=True)(decoded))
        assert got.dtype == torch.uint8 and torch.equal(got, expected)


def test_training_batches_are_the_same_for_any_worker_count_and_change_with_the_epoch(images):
    torch.manual_seed(0)
    batches = {}
    for workers in (0, 2):
        dm = module(images, num_workers=workers, persistent_workers=False)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(3)
        batches[workers] = list(loader)
    assert len(batches[0]) == 4
    for (x0, s0, y0), (x2, s2, y2) in zip(batches[0], batches[2]):
        assert x0.shape == (5, 3, 12, 12) and x0.dtype == torch.uint8
        assert torch.equal(x0, x2) and torch.equal(y0, y2) and torch.equal(s0, s2)
    # The order is DistributedSampler's permutation of seed + epoch.
    ds = DistributedSampler(range(20), num_replicas=1, rank=0, shuffle=True, seed=torch.initial_seed())
    ds.set_epoch(3)
    labels = torch.cat([y for _, _, y in batches[0]])
    assert torch.equal(labels, dm.splits["train"][2][list(ds)])
    loader.sampler.set_epoch(4)
    assert not torch.equal(torch.cat([y for _, _, y in loader]), labels)


def test_an_images_crop_is_seeded_by_run_seed_epoch_and_index(images):
    dm = module(images)
    dataset = dm.train_dataloader().dataset
    a, b = dataset[(3, 0)][0], dataset[(3, 0)][0]
    assert torch.equal(a, b) and not torch.equal(a, dataset[(3, 1)][0])
    top, left, h, w = TrainCrop(12).box(*decode_image(dataset.paths[3]).shape[-2:], sample_rng(dataset.seed, 0, 3))
    expected = v2.functional.resized_crop(decode_image(dataset.paths[3]), top, left, h, w, [12, 12], antialias=True)
    assert torch.equal(a, expected) or torch.equal(a, expected.flip(-1))


def test_the_crop_box_is_random_resized_crops():
    """v2.RandomResizedCrop's box: area fraction in [min_scale, 1], aspect ratio in [3/4, 4/3], inside the image;
    the central crop when ten tries fail (min_scale 1 on a 3:1 image)."""
    crop = TrainCrop(8, min_scale=0.25)
    for seed in range(300):
        top, left, h, w = crop.box(375, 500, sample_rng(seed, 0, 0))
        assert 0 <= top <= 375 - h and 0 <= left <= 500 - w
        assert 0.25 - 0.02 <= h * w / (375 * 500) <= 1 and 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
    assert TrainCrop(8, min_scale=1.0).box(100, 300, sample_rng(0, 0, 0)) == (0, 83, 100, 133)


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_are_disjoint_cover_the_data_and_train_as_distributed_sampler(world):
    n = 23
    train = [[i for i, _ in EpochSampler(n, r, world, train=True, seed=5)] for r in range(world)]
    for r in range(world):
        reference = DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=True, seed=5)
        assert train[r] == list(reference)
    assert set().union(*train) == set(range(n)) and len({len(t) for t in train}) == 1
    evaluation = [list(EpochSampler(n, r, world, train=False)) for r in range(world)]
    assert sorted(i for part in evaluation for i in part) == list(range(n))  # each sample once, no padding
    assert all(len(EpochSampler(n, r, world, train=False)) == len(evaluation[r]) for r in range(world))


def test_each_ranks_loaders_read_its_share_of_the_files(images):
    """Through the datamodule, as two DDP ranks see it: training shares are DistributedSampler's, disjoint and
    covering (20 files: 10 each); test blocks cover the 9 test files once."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    dm = module(images)
    train, test = [], []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=2)
        train.append([dm.splits["train"][0].paths[i] for i, _ in dm.train_dataloader().sampler])
        test.append([dm.splits["test"][0].paths[i] for i in dm.test_dataloader().sampler])
        reference = DistributedSampler(range(20), num_replicas=2, rank=rank, shuffle=True, seed=torch.initial_seed())
        reference.set_epoch(2)
        assert train[rank] == [dm.splits["train"][0].paths[i] for i in reference]
    assert not set(train[0]) & set(train[1]) and len(set(train[0]) | set(train[1])) == 20
    assert test[0] + test[1] == dm.splits["test"][0].paths


def test_a_corrupt_image_is_one_line_naming_the_file_even_from_a_worker(images, tmp_path):
    root = folder(tmp_path / "bad", train=4, test=1)
    bad = root / "train" / "c1" / "2.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated inside the header
    (root / "train" / "c2" / "1.jpg").write_bytes(b"not a jpeg at all")
    dm = module(root, val_size=0, num_workers=2, persistent_workers=False)
    with pytest.raises(ImageReadError) as error:
        for _ in dm.train_dataloader():
            pass
    message = str(error.value)
    assert len(message.splitlines()) == 1 and message.startswith("cannot read image ")
    assert str(bad) in message or str(root / "train" / "c2" / "1.jpg") in message


@pytest.mark.slow
def test_a_corrupt_image_stops_the_cli_with_one_line(tmp_path):
    root = folder(tmp_path / "bad", train=3, test=1)
    bad = root / "test" / "c0" / "0.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    proc = subprocess.run([sys.executable, "-m", "src.train", *FAST[:2], "dataset=folder", f"dataset.root={root}",
                           "dataset.stream=true", "dataset.image_size=8", "dataset.num_workers=1", "case=baseline",
                           "depth=10", "dataset.val_size=0", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: cannot read image {bad}: ")


def test_bad_options_are_one_line(images):
    for kwargs in ({"pad": 4}, {"image_size": 16, "resize_size": 8}, {"min_scale": 0}, {"val_size": 1.5},
                   {"num_workers": -1}, {"val_size": 100}):
        with pytest.raises(StreamingConfigError) as error:
            module(images, **kwargs)
        assert len(str(error.value).splitlines()) == 1


def test_folder_streams_when_asked_or_over_the_memory_budget(images):
    common = dict(root=str(images), image_size=16, val_size=0, pad=4, on_device=True, num_workers=0)
    assert isinstance(folder_datamodule(**common), FolderDataModule)
    assert isinstance(folder_datamodule(stream=True, **common), StreamingFolderDataModule)
    # 24 training images of 3 x 16 x 16 bytes = 18,432 bytes: over a budget of 1e-5 GiB (10,737 bytes).
    assert isinstance(folder_datamodule(memory_budget_gb=1e-5, **common), StreamingFolderDataModule)
    assert isinstance(folder_datamodule(memory_budget_gb=2e-5, **common), FolderDataModule)


def test_streamed_folder_keeps_multi_level_custom_trees(images, tmp_path):
    from src.train import train

    mapping = tmp_path / "tree.yaml"
    mapping.write_text("levels:\n  pair: {a: [c0], b: [c1, c2]}\n  all: {x: [c0, c1, c2]}\n")
    run = tmp_path / "run"
    run.mkdir()
    cfg = compose_cfg([*FAST, "dataset=folder", f"dataset.root={images}", "dataset.stream=true", "case=custom",
                       f"case.file={mapping}", "dataset.image_size=12", "dataset.num_workers=0", "depth=10",
                       "dataset.val_size=3"])
    record = train(cfg, run)
    assert record["superclasses"] == [0, 1, 1] and set(record["level_acc"]) == {"class", "pair", "all"}
    assert record["level_acc"]["all"] == 100.0 and record["level_acc"]["pair"] >= record["level_acc"]["class"]  # hand-derived: one group holds every class


KILL = textwrap.dedent("""
    import os, signal, sys
    import pytorch_lightning as pl
    from helpers import compose_cfg
    from src.train import train

    class Kill(pl.Callback):  # SIGKILL in the middle of epoch 1: nothing runs after it
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    overrides, kill = sys.argv[2:], sys.argv[1] == "kill"
    train(compose_cfg(overrides), __import__("pathlib").Path(overrides[-1].split("=", 1)[1]), [Kill()] if kill else [])
""")


@pytest.mark.slow
def test_a_streaming_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(images, tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    overrides = ["trainer.max_epochs=3", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                 "dataset=folder", f"dataset.root={images}", "dataset.stream=true", "dataset.image_size=12",
                 "dataset.num_workers=2", "dataset.batch_size=4", "case=baseline", "depth=10", "threads=1",
                 "dataset.val_size=0"]

    def run(mode, run_dir):
        run_dir.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, str(script), mode, *overrides, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run("plain", whole).returncode == 0
    proc = run("kill", killed)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert json.loads((killed / "metrics.json").read_text())["status"] == "running"
    assert run("plain", killed).returncode == 0
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert b["status"] == "finished" and b["resumed_at_epoch"] == 1 and a["resumed_at_epoch"] is None
    assert (a["test_loss"], a["test_error"]) == (b["test_loss"], b["test_error"])
    assert (whole / "history.csv").read_text() == (killed / "history.csv").read_text()
