"""Users' own images: ``root/train/<class>/*.png|jpg`` and ``root/test/<class>/...`` (``dataset=folder``).

Class names are the folder names under ``train/``, sorted, so they are known before any image is
read (the superclass mapping is resolved against them). Images are decoded once with
``torchvision.io``, converted to RGB, resized to ``image_size`` × ``image_size`` and kept as one
uint8 tensor per split, like the built-in datasets.
"""
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import resize

from src.data.datamodule import InMemoryDataModule
from src.run.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class FolderDatasetError(UserError):
    """The image folder is missing, empty, or holds an image that cannot be read."""


class FolderDataModule(InMemoryDataModule):
    name = "folder"

    def __init__(self, root: Optional[str] = None, image_size: Optional[int] = 32, superclass_file: Optional[str] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None, **kwargs) -> None:
        # mean/std None: measured on the training split, as there are no published statistics.
        super().__init__(mean=mean, std=std, **kwargs)
        if root is None:
            raise FolderDatasetError("dataset=folder needs dataset.root=PATH, a folder with train/<class>/ and "
                                     "test/<class>/ image folders")
        if image_size is not None and image_size < 1:
            raise FolderDatasetError(f"dataset.image_size must be a positive number of pixels, got {image_size}")
        self.root, self.image_size = Path(root).expanduser(), image_size
        self.superclass_file = superclass_file  # read by case=custom (conf/case/custom.yaml), not here
        self.class_names = tuple(sorted(p.name for p in self._class_dirs("train")))
        if not self.class_names:
            raise FolderDatasetError(f"{self.root / 'train'} has no class folders; expected train/<class>/*.png")
        unknown = sorted(set(p.name for p in self._class_dirs("test")) - set(self.class_names))
        if unknown:
            raise FolderDatasetError(f"{self.root / 'test'} has class folders {unknown} that train/ does not have; "
                                     f"train classes are {list(self.class_names)}")

    def _class_dirs(self, split: str) -> list[Path]:
        folder = self.root / split
        if not folder.is_dir():
            raise FolderDatasetError(f"dataset.root={self.root} has no {split}/ folder; expected "
                                     f"{split}/<class>/*.png|jpg")
        return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {split: self._load_split(split) for split in ("train", "test")}

    def _load_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for label, name in enumerate(self.class_names):
            folder = self.root / split / name
            if split == "test" and not folder.exists():
                continue  # a class may have no test images; train/ defines the classes
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FolderDatasetError(f"{folder} is empty: no {'/'.join(IMAGE_SUFFIXES)} images")
            images += [self._read(path) for path in files]
            labels += [label] * len(files)
        if not images:
            raise FolderDatasetError(f"{self.root / split} has no images")
        shapes = {img.shape for img in images}
        if len(shapes) > 1:
            raise FolderDatasetError(f"{self.root / split} holds images of sizes {sorted(s[1:] for s in shapes)}; "
                                     f"set dataset.image_size=N to resize them to N×N")
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    def _read(self, path: Path) -> torch.Tensor:
        try:
            image = decode_image(str(path), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError, ValueError) as e:
            raise FolderDatasetError(f"cannot read image {path}: {' '.join(str(e).split())}") from None
        if self.image_size is not None and image.shape[1:] != (self.image_size, self.image_size):
            image = resize(image, [self.image_size, self.image_size], antialias=True)
        return image
