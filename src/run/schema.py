"""The typed schema of the config: dataclasses for the keys users type on the command line, stored in Hydra's
ConfigStore as ``base_config`` (and ``dataset/base_<kind>``, ``model/base_<kind>``, ``trainer/base_trainer``) by
``register_schema`` at import, so that Hydra refuses ``seed=abc`` or ``+trainer.foo=1`` at composition.
conf/config.yaml, conf/trainer/default.yaml and each conf/dataset/<name>.yaml name their schema first in their
defaults list. The range checks on the composed config are ``src/run/config.py``'s."""
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TrainerConfig:
    """The Trainer keys of conf/trainer/default.yaml, typed. Any other argument of ``pytorch_lightning.Trainer``
    is accepted with a ``+`` (``+trainer.max_steps=100``); a key the Trainer does not take is refused by
    ``check_config``. A MISSING key (strategy, num_nodes) reaches the Trainer only when set, with or without
    ``+`` (``+trainer.strategy=ddp``)."""
    max_epochs: int = 30
    accelerator: str = "auto"
    devices: Any = 1  # int, list or "auto"
    precision: Any = "32-true"
    benchmark: bool = True
    deterministic: Any = False  # bool or "warn"
    num_sanity_val_steps: int = 0
    enable_model_summary: bool = False
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
    enable_checkpointing: bool = True
    fast_dev_run: Any = False  # bool or int
    overfit_batches: Any = 0  # int (batches) or float (fraction)
    gradient_clip_val: Optional[float] = 1.0
    strategy: Any = MISSING  # "ddp", "auto", ...
    num_nodes: int = MISSING
    limit_train_batches: Optional[Any] = None
    limit_val_batches: Optional[Any] = None
    limit_test_batches: Optional[Any] = None
    check_val_every_n_epoch: Optional[int] = 1


@dataclass
class DatasetConfig:
    """Keys every dataset has. Each field with a default is added to every dataset that extends it,
    and reaches its constructor: defaults here equal the constructor's."""
    _target_: str = MISSING
    name: str = MISSING
    data_dir: str = "data"
    download: bool = True
    batch_size: int = 128
    eval_batch_size: int = 512
    val_size: Any = 0.1  # a fraction (float) or a number of images (int)
    split_seed: int = 0
    pad: int = 4
    flip: bool = True
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    on_device: bool = True
    depth: int = 28  # the dataset's default network depth (config.yaml's `depth`); no datamodule argument


@dataclass
class FileDatasetConfig(DatasetConfig):
    """digits, mnist."""


@dataclass
class Cifar10Config(FileDatasetConfig):
    verify_checksums: bool = True


@dataclass
class SVHNConfig(Cifar10Config):
    use_extra: bool = False


@dataclass
class FolderConfig(DatasetConfig):
    root: Optional[str] = None  # required: FolderDataModule says so in one line
    superclass_file: Optional[str] = None
    image_size: Optional[int] = None
    stream: bool = False  # src/data/folder_stream.py: stream, or stay in memory unless over the budget
    memory_budget_gb: Optional[float] = None
    resize_size: Optional[int] = None
    min_scale: float = 0.08
    num_workers: int = 2
    pin_memory: bool = True
    prefetch_factor: int = 4
    persistent_workers: bool = True
    gpu_decode: bool = False
    decode: str = "reduced"  # or "full": src/data/crops.py, docs/streaming.md


@dataclass
class StreamingConfig(DatasetConfig):
    """The streaming data sets (src/data/streaming.py): files decoded in DataLoader workers each epoch."""
    download: bool = False
    batch_size: int = 64
    eval_batch_size: int = 128
    pad: int = 0
    image_size: int = 224
    resize_size: Optional[int] = None
    min_scale: float = 0.08
    num_workers: int = 2
    pin_memory: bool = True
    prefetch_factor: int = 4
    persistent_workers: bool = True
    gpu_decode: bool = False
    decode: str = "reduced"  # or "full": src/data/crops.py, docs/streaming.md


@dataclass
class INat21Config(StreamingConfig):
    version: str = "2021_train_mini"


@dataclass
class MBMConfig(StreamingConfig):
    root: Optional[str] = None
    hierarchy_dir: Optional[str] = None
    splits_dir: Optional[str] = None


@dataclass
class ModelConfig:
    """model=preact (conf/model/preact.yaml)."""
    _target_: str = "src.models.PreActResNet"
    depth: int = MISSING
    widen_factor: int = 1


@dataclass
class TorchvisionModelConfig:
    """model=resnet18 | resnet50 (conf/model/)."""
    _target_: str = "src.models.torchvision_resnet.TorchvisionResNet"
    arch: str = MISSING
    weights: Optional[str] = None


@dataclass
class OptimizerConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 1.0
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass
class Config:
    """The primary config's typed top level. Groups whose options differ in shape (case, eval, method)
    stay open (``Any``)."""
    seed: Optional[int] = 0
    depth: int = MISSING  # conf/config.yaml: ${dataset.depth}
    model: Any = MISSING  # typed by each option's base (MODEL_SCHEMAS)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    dataset: Any = MISSING  # typed by each option's base (DATASET_SCHEMAS)
    trainer: TrainerConfig = MISSING
    case: Any = MISSING
    method: Any = MISSING
    eval: Any = None
    divergence_factor: float = 10.0
    lr_min: float = 0.0
    lr_rule: str = "shared"  # shared | loss_scale (src/models/optimizers.py)
    channels_last: bool = True
    compile: bool = False
    progress_refresh_rate: int = 10
    test_curve: bool = False
    probe: bool = False
    logger: Any = MISSING  # conf/logger/: one Lightning logger's arguments
    threads: Optional[int] = 1  # torch.set_num_threads; null: torch's default
    print_config: bool = False
    debug_run: bool = False
    test: bool = True  # false: fit only, no test pass (tuning trials: the test split is never read)
    tune: Any = None  # conf/tune/: the Optuna study of python -m src.tune (src/tuning/)


# The base each conf/model/*.yaml and conf/dataset/*.yaml names first in its defaults list.
MODEL_SCHEMAS = {"base_preact": ModelConfig, "base_torchvision": TorchvisionModelConfig}
DATASET_SCHEMAS = {"base_file": FileDatasetConfig, "base_cifar10": Cifar10Config, "base_svhn": SVHNConfig,
                   "base_folder": FolderConfig, "base_stream": StreamingConfig, "base_inat21": INat21Config,
                   "base_mbm": MBMConfig}


def register_schema() -> None:
    """Store the schema in Hydra's ConfigStore; call before ``@hydra.main`` composes (module level)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, node in DATASET_SCHEMAS.items():
        cs.store(group="dataset", name=name, node=node)
    cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
    for name, node in MODEL_SCHEMAS.items():
        cs.store(group="model", name=name, node=node)


register_schema()  # at import: src.train and the tests compose only after importing this module
