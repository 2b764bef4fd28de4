from src.data.datamodule import InMemoryDataModule
from src.data.datasets import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, MNISTDataModule, SVHNDataModule
from src.data.folder import FolderDataModule
from src.data.streaming import StreamingDataModule
from src.data.superclasses import SuperclassError, custom_table, superclass_table, validate_table

__all__ = ["InMemoryDataModule", "DigitsDataModule", "MNISTDataModule", "SVHNDataModule", "CIFAR10DataModule", "CIFAR100DataModule",
           "FolderDataModule", "StreamingDataModule", "SuperclassError", "custom_table", "superclass_table", "validate_table"]
