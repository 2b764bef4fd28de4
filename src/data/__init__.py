"""The data: datamodules, the in-memory pipeline, class trees and the superclass cases (paper, Table 1)."""
import importlib

# The names configs use as `_target_` (conf/dataset/*.yaml, and configs saved by older runs), resolved on first
# use so that `import src.data.tree` does not load Lightning. Code imports from the defining module.
_LAZY = {"InMemoryDataModule": "datamodule", "DigitsDataModule": "datasets", "MNISTDataModule": "datasets",
         "SVHNDataModule": "datasets", "CIFAR10DataModule": "datasets", "CIFAR100DataModule": "datasets",
         "FolderDataModule": "folder", "StreamingDataModule": "streaming", "SuperclassError": "superclasses", "custom_table": "superclasses",
         "superclass_table": "superclasses", "validate_table": "superclasses"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
