"""Image batches in shared-memory blocks the workers reuse (src/data/worker_loader.py): the same values as the
DataLoader's own collate, blocks reused, a batch still held never overwritten, slots freed by batches never taken."""
import torch
from torch.utils.data import Dataset

from src.data.image_files import collate_images
from src.data.worker_loader import SharedBatches, SlotBatch
from src.data.worker_loader import WorkerLoader


class Images(Dataset):
    """Image i: uint8 (3, 24, 20), channels-last in memory as a decoded crop is, every pixel a function of i."""

    def __len__(self) -> int:
        return 96

    def __getitem__(self, i: int):
        pixels = (torch.arange(24 * 20 * 3).view(24, 20, 3) * 7 + i * 31) % 251
        return pixels.to(torch.uint8).permute(2, 0, 1), torch.tensor(i % 3), torch.tensor(i)


def expected(labels: torch.Tensor) -> torch.Tensor:
    return torch.stack([Images()[int(i)][0] for i in labels])


def loader(**kw) -> WorkerLoader:
    return WorkerLoader(Images(), batch_size=8, num_workers=2, collate_fn=collate_images, timeout=60,
                        prefetch_factor=2, **kw)


def test_batches_equal_the_plain_collates_and_the_blocks_are_reused():
    plain = [batch for batch in WorkerLoader(Images(), batch_size=8, collate_fn=collate_images)]
    addresses = set()
    for epoch, (batch, reference) in enumerate(zip(loader(), plain)):
        images, superclass, label = batch
        assert torch.equal(images, reference[0]) and torch.equal(label, reference[2])
        assert torch.equal(superclass, reference[1]) and images.is_contiguous(memory_format=torch.channels_last)
        addresses.add(images.data_ptr())
        del batch, images  # taken and dropped: the worker may write its next batch there
    # 12 batches from 2 workers, each reusing the blocks the main process let go of (at most 6 per worker).
    assert len(plain) == 12 and len(addresses) < 12


def test_a_batch_still_held_is_never_overwritten():
    kept = list(loader())  # every batch held: no slot comes free, the workers make fresh blocks past their 6
    assert len(kept) == 12 and len({images.data_ptr() for images, _, _ in kept}) == 12
    for images, _, label in kept:
        assert torch.equal(images, expected(label))


def test_a_view_keeps_its_slot_and_batches_never_taken_free_theirs():
    epochs = loader(persistent_workers=True)
    views = []
    for i, (images, _, label) in enumerate(epochs):  # an epoch cut short: batches in flight are never taken
        views.append((images[:, 1:, 2:], label))  # a view of each batch outlives the batch
        if i == 3:
            break
    for images, _, label in epochs:  # the next epoch, with the same workers and blocks
        assert torch.equal(images, expected(label))
        del images
    for view, label in views:
        assert torch.equal(view, expected(label)[:, 1:, 2:])
    shared = epochs._shared
    held = sum(shared.busy.get_obj())
    assert held == 4  # the four views' slots; everything taken and dropped, or never taken, is free again
    del view, views
    assert sum(shared.busy.get_obj()) == 0


def test_outside_a_worker_the_collate_is_the_plain_one():
    pool = SharedBatches(workers=1, slots=2)
    batch = [Images()[i] for i in range(4)]
    images, _, label = collate_images(batch, shared=pool)
    assert not isinstance(images, SlotBatch) and torch.equal(images, expected(label))


def test_a_batch_kept_after_its_loader_keeps_its_block_alone():
    """The batch's memory holds the slot's flags, not the loader's blocks: when the loader and its workers are
    gone, a batch still held keeps its values and nothing else stays mapped."""
    import gc

    from src.data import worker_loader
    epochs = loader()
    batches = iter(epochs)
    images, _, label = next(batches)
    token = epochs._shared.token
    for _ in batches:
        pass
    del batches, epochs
    gc.collect()
    assert token not in worker_loader._POOLS and torch.equal(images, expected(label))


def test_the_pin_thread_copies_the_batch_out_and_frees_its_slot(monkeypatch):
    """On a GPU the DataLoader's pin thread calls ``pin_memory()`` on what a worker sent: the batch is copied into
    pinned memory and its slot is free at once (pinning needs CUDA: a copy stands in for it here)."""
    import io
    from multiprocessing.reduction import ForkingPickler

    from src.data import worker_loader
    pool = SharedBatches(workers=1, slots=2)
    monkeypatch.setattr(worker_loader, "get_worker_info", lambda: type("Info", (), {"id": 0}))
    items = [Images()[i] for i in range(5)]
    sent = collate_images(items, shared=pool)
    assert isinstance(sent, SlotBatch) and list(pool.busy.get_obj()) == [1, 0]
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(sent)  # as the worker's queue sends it; received below as the main process does
    received = ForkingPickler.loads(buffer.getvalue())
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, device=None: self.clone())
    images, superclass, label = received.pin_memory()
    assert list(pool.busy.get_obj()) == [0, 0]
    assert torch.equal(images, expected(label)) and torch.equal(label, torch.arange(5))
    assert torch.equal(superclass, torch.arange(5) % 3) and label.dtype == torch.int64
