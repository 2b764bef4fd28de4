"""``dataset=folder`` at any size: the user's ``root/train/<class>/`` and ``root/test/<class>/`` images streamed from
disk (``src.data.streaming``) when ``dataset.stream=true``, or when held in memory they would pass
``dataset.memory_budget_gb`` (default: half of this machine's memory); else the in-memory ``FolderDataModule``.

Streaming, ``image_size`` is the crop (RandomResizedCrop for training, Resize + CenterCrop for evaluation),
``pad`` is unused, and a null ``mean``/``std`` means ImageNet's (measuring them would read every image).
The superclass file and the multi-level ``case=custom`` trees work as in memory: they name the class folders.
"""
import os
from pathlib import Path
from typing import Optional

from src.data.folder import IMAGE_SUFFIXES, FolderDataModule, FolderDatasetError
from src.data.image_files import IMAGENET_MEAN, IMAGENET_STD, read_image
from src.data.streaming import StreamingDataModule

STREAM_ONLY = ("resize_size", "min_scale", "num_workers", "pin_memory", "prefetch_factor", "persistent_workers",
               "gpu_decode", "decode")
MEMORY_ONLY = ("pad", "on_device")


def _class_dirs(root: Path, split: str) -> list[Path]:
    folder = root / split
    if not folder.is_dir():
        raise FolderDatasetError(f"dataset.root={root} has no {split}/ folder; expected {split}/<class>/*.png|jpg")
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


class StreamingFolderDataModule(StreamingDataModule):
    name = "folder"

    def __init__(self, root: Optional[str] = None, superclass_file: Optional[str] = None, **kwargs) -> None:
        kwargs["mean"] = kwargs.get("mean") or IMAGENET_MEAN
        kwargs["std"] = kwargs.get("std") or IMAGENET_STD
        super().__init__(**kwargs)
        if root is None:
            raise FolderDatasetError("dataset=folder needs dataset.root=PATH, a folder with train/<class>/ and "
                                     "test/<class>/ image folders")
        self.root, self.superclass_file = Path(root).expanduser(), superclass_file
        self.class_names = tuple(p.name for p in _class_dirs(self.root, "train"))
        if not self.class_names:
            raise FolderDatasetError(f"{self.root / 'train'} has no class folders; expected train/<class>/*.png")
        unknown = sorted({p.name for p in _class_dirs(self.root, "test")} - set(self.class_names))
        if unknown:
            raise FolderDatasetError(f"{self.root / 'test'} has class folders {unknown} that train/ does not have; "
                                     f"train classes are {list(self.class_names)}")

    def samples(self, split: str) -> list[tuple[str, int]]:
        out = []
        for label, name in enumerate(self.class_names):
            folder = self.root / split / name
            if split == "test" and not folder.exists():
                continue  # a class may have no test images; train/ defines the classes
            files = _images(folder)
            if not files:
                raise FolderDatasetError(f"{folder} is empty: no {'/'.join(IMAGE_SUFFIXES)} images")
            out += [(str(path), label) for path in files]
        if not out:
            raise FolderDatasetError(f"{self.root / split} has no images")
        return out


def in_memory_bytes(root: Path, image_size: Optional[int]) -> int:
    """What the training images take as one uint8 tensor: N × 3 × S² (S: image_size, else the first image's)."""
    files = [f for d in _class_dirs(root, "train") for f in _images(d)]
    if not files:
        return 0
    if image_size is None:
        _, h, w = read_image(str(files[0])).shape
        return len(files) * 3 * h * w
    return len(files) * 3 * image_size * image_size


def memory_budget_bytes(memory_budget_gb: Optional[float]) -> float:
    if memory_budget_gb is not None:
        return memory_budget_gb * 2**30
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2


def folder_datamodule(stream: bool = False, memory_budget_gb: Optional[float] = None, **kwargs):
    """The ``dataset=folder`` datamodule (conf/dataset/folder.yaml's ``_target_``): streaming or in memory."""
    root = kwargs.get("root")
    if not stream and root is not None and Path(root).expanduser().is_dir():
        need = in_memory_bytes(Path(root).expanduser(), kwargs.get("image_size"))
        stream = need > memory_budget_bytes(memory_budget_gb)
    if stream:
        if kwargs.get("image_size") is None:
            raise FolderDatasetError("dataset.stream=true crops every image to dataset.image_size: set it "
                                     "(224 for the field's recipe)")
        return StreamingFolderDataModule(**{k: v for k, v in kwargs.items() if k not in MEMORY_ONLY})
    return FolderDataModule(**{k: v for k, v in kwargs.items() if k not in STREAM_ONLY})
