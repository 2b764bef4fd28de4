"""The streaming path's DataLoader (``WorkerLoader``): a worker that dies or sends no batch is one line
(``WorkerError``), and image batches cross from the workers in shared-memory blocks the workers reuse.

The DataLoader's collate puts each batch in a fresh shared-memory block: a worker then takes a page fault (the
kernel zeroes the page) for every 4 kB of it, and the main process unmaps and frees it when the batch is dropped:
4.9-6.1 ms a 9.6 MB batch (64 images of 224 px) against 0.8 ms to write the same batch into a block already mapped
(2-core Xeon VM, 2026-12-06), a tenth of a worker's time per image. Here each worker keeps a few blocks (``slots``)
and reuses one once the main process has let go of the batch in it:

- the worker claims a free slot (a flag in a small shared array, under its lock), stacks the images into it and
  sends a ``SlotBatch``: the slot's number, the batch's shape, the labels, and the block itself only the first time;
- in the main process the ``SlotBatch`` becomes the batch (``WorkerLoader``'s iterator, or the pin thread's
  ``pin_memory``), its images a tensor over the block whose memory holds a ``_Lease``: when the last tensor or view
  of the batch is freed (moved to the GPU, normalised, dropped), the lease frees the slot. A batch that is never taken (an epoch cut short)
  frees it when its ``SlotBatch`` is dropped. A batch kept for ever keeps its slot: with no free slot the worker
  makes a fresh block, as the DataLoader does.

Only the main process's unpickled copy of a ``SlotBatch`` ever frees a slot, and only after every read of it is
done (the lock orders the writes). A worker never writes into a slot the main process may still read."""
import functools
import multiprocessing
import uuid
import weakref
from collections.abc import Iterator
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from src.data.image_files import collate_images
from src.run.errors import UserError

_POOLS: "weakref.WeakValueDictionary[str, SharedBatches]" = weakref.WeakValueDictionary()  # main process: by token


class SharedBatches:
    """``slots`` reusable blocks per worker for one DataLoader iterator's workers (``WorkerLoader`` makes one per
    set of workers it starts)."""

    def __init__(self, workers: int, slots: int, context=None) -> None:
        self.token, self.workers, self.slots = uuid.uuid4().hex, workers, slots
        self.busy = (context or multiprocessing.get_context()).Array("b", workers * slots)  # 1: the main one's
        self._blocks: dict[int, torch.UntypedStorage] = {}  # in a worker: its blocks, by slot
        self._sent: set[int] = set()  # in a worker: slots whose block the main process has
        self._mapped: dict[tuple[int, int], torch.UntypedStorage] = {}  # in the main process: (worker, slot) -> block
        _POOLS[self.token] = self

    def __getstate__(self) -> dict:  # to a spawned worker: the flags, not this process's blocks
        return {**self.__dict__, "_blocks": {}, "_sent": set(), "_mapped": {}}

    def stack(self, images: list[torch.Tensor], columns: list[tuple]):
        """In a worker: the uint8 ``images`` (C, H, W), channels-last in memory, stacked as (N, H, W, C) into a free
        slot, and the other ``columns`` (tuples of tensors: the labels) stacked as numpy arrays, which cross the pipe
        by value (as tensors each would be a shared-memory block of its own, its handle fetched by the main process):
        a ``SlotBatch``. None if this is not a worker of these batches, the images differ in shape or type, a column
        holds something else than tensors, or every slot is taken."""
        info = get_worker_info()
        images = [image.permute(1, 2, 0) for image in images]
        first = images[0]
        if (info is None or info.id >= self.workers or first.dtype != torch.uint8 or
                any(image.shape != first.shape or image.dtype != first.dtype for image in images)):
            return None
        try:
            arrays = [torch.stack(column).numpy() for column in columns]
        except (TypeError, RuntimeError):  # not tensors, a type numpy lacks (bfloat16), or shapes that differ
            return None
        slot = self._claim(info.id)
        if slot is None:
            return None
        shape = (len(images), *first.shape)
        nbytes = int(np.prod(shape))
        block = self._blocks.get(slot)
        if block is None or block.nbytes() < nbytes:
            block = self._blocks[slot] = torch.UntypedStorage._new_shared(nbytes)
            self._sent.discard(slot)
        torch.stack(images, out=torch.empty(0, dtype=torch.uint8).set_(block, 0, shape))
        send = slot not in self._sent
        self._sent.add(slot)
        return SlotBatch(self.token, info.id, slot, shape, block if send else None, arrays)

    def _claim(self, worker: int) -> Optional[int]:
        with self.busy.get_lock():
            flags = self.busy.get_obj()
            for slot in range(self.slots):
                if not flags[worker * self.slots + slot]:
                    flags[worker * self.slots + slot] = 1
                    return slot
        return None


def _release(busy, index: int) -> None:
    try:
        with busy.get_lock():
            busy.get_obj()[index] = 0
    except Exception:  # interpreter shutdown: the workers are gone too
        pass


class _Lease:
    """The memory of a tensor over a slot (numpy's array interface): freed with the tensor's last view, it frees
    the slot. It holds the flags, not the ``SharedBatches``: a batch kept keeps its own block alone."""

    def __init__(self, busy, index: int, array: np.ndarray) -> None:
        self.busy, self.index, self.array = busy, index, array
        self.__array_interface__ = array.__array_interface__

    def __del__(self) -> None:
        _release(self.busy, self.index)


class SlotBatch:
    """A worker's batch, its images in its slot ``slot``, as it crosses the queue; ``batch()`` in the main
    process."""

    def __init__(self, token: str, worker: int, slot: int, shape: tuple, block: Optional[torch.UntypedStorage],
                 columns: list[np.ndarray]) -> None:
        self.token, self.worker, self.slot, self.shape, self.block = token, worker, slot, shape, block
        self.columns = columns
        self.busy, self.index = None, -1  # set where the batch is received: that copy frees the slot

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("busy", "index")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        pool = _POOLS.get(self.token)
        if pool is None:
            raise RuntimeError("a batch in shared memory came from workers whose DataLoader iterator is gone")
        key = (self.worker, self.slot)
        if self.block is not None:
            pool._mapped[key] = self.block
        self.block, self.busy, self.index = pool._mapped[key], pool.busy, self.worker * pool.slots + self.slot

    def batch(self) -> list[torch.Tensor]:
        """[images, *columns]: the images uint8 (N, C, H, W) as a view of the slot's (N, H, W, C) block
        (channels-last; the slot is free again once it and its views are gone), the columns as tensors."""
        busy, self.busy = self.busy, None
        if busy is None:
            raise RuntimeError("this batch was already taken, or was not received here")
        array = torch.empty(0, dtype=torch.uint8).set_(self.block, 0, self.shape).numpy()
        images = torch.from_numpy(np.asarray(_Lease(busy, self.index, array))).permute(0, 3, 1, 2)
        return [images, *(torch.from_numpy(column) for column in self.columns)]

    def pin_memory(self, device=None) -> list[torch.Tensor]:  # the DataLoader's pin thread: copied, the slot freed
        return [tensor.pin_memory() for tensor in self.batch()]

    def __del__(self) -> None:  # received and never taken
        if getattr(self, "busy", None) is not None:
            _release(self.busy, self.index)


class WorkerError(UserError):
    """A DataLoader worker died or sent no batch: one line, instead of a traceback or a wait without end."""


class _OneLineErrors:
    """A DataLoader iterator whose worker failures (death, a batch never sent) are ``WorkerError``."""

    def __init__(self, iterator: Iterator, timeout: float) -> None:
        self.iterator, self.timeout = iterator, timeout

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self.iterator)

    def __getattr__(self, name: str):
        return getattr(self.iterator, name)

    def __next__(self):
        try:
            batch = next(self.iterator)
        except RuntimeError as e:
            message = " ".join(str(e).split())
            if "timed out" in message:
                raise WorkerError(f"no batch came from the DataLoader workers in {self.timeout:g} s: a worker is "
                                  f"stuck or could not send its batch (its error, if any, is above)") from None
            if "exited unexpectedly" in message or "is killed by signal" in message:
                raise WorkerError(f"a DataLoader worker died: {message.split('. ')[0]}") from None
            raise
        return batch.batch() if isinstance(batch, SlotBatch) else batch  # (a pin thread has taken it already)


class WorkerLoader(DataLoader):
    """DataLoader with ``_OneLineErrors`` iterators; with workers, image batches (``collate_images``) cross in
    shared-memory blocks the workers reuse (``SharedBatches``: one set for each set of workers started)."""

    def __iter__(self):
        collate = getattr(self.collate_fn, "func", self.collate_fn)
        if self.num_workers and collate is collate_images and (self._iterator is None or not self.persistent_workers):
            # Slots per worker: the batches in flight (prefetch_factor), then those taken and not yet dropped.
            self._shared = SharedBatches(self.num_workers, 2 * self.prefetch_factor + 2, self.multiprocessing_context)
            self.collate_fn = functools.partial(collate_images, shared=self._shared)
        iterator = super().__iter__()
        return _OneLineErrors(iterator, self.timeout) if self.num_workers else iterator
