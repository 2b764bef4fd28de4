"""Range checks on the composed config (``check_config``) and its typed schema (dataclasses).

``check_config`` works on any DictConfig, with or without the schema: each violation is one ``ConfigError`` line
naming the key. The dataclasses type the keys users type on the command line; stored in Hydra's ConfigStore as
``base_config`` (and ``dataset/base_<kind>``, ``trainer/base_trainer``) by ``register_schema`` (at import), they make
Hydra refuse ``seed=abc`` or ``+trainer.foo=1`` at composition. conf/config.yaml, conf/trainer/default.yaml and each
conf/dataset/<name>.yaml name their schema first in their defaults list.
"""
import difflib
import inspect
import logging
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf

from src.run.errors import ConfigError

# (key, test, what it must be): the first that fails is reported.
RULES = (
    ("seed", lambda v: v is None or (isinstance(v, int) and 0 <= v < 2**32), "an integer in [0, 2**32) or null"),
    ("optimizer.lr", lambda v: _number(v) and v > 0, "> 0"),
    ("optimizer.momentum", lambda v: _number(v) and 0 <= v < 1, "in [0, 1)"),
    ("dataset.batch_size", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("trainer.max_epochs", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("threads", lambda v: v is None or (isinstance(v, int) and v >= 1), "an integer >= 1 or null"),
    ("depth", lambda v: isinstance(v, int) and v >= 10 and (v - 4) % 6 == 0, "6n+4 with n >= 1 (10, 16, 28, ...)"),
    ("divergence_factor", lambda v: _number(v) and v > 0, "> 0"),
    ("model.depth", lambda v: isinstance(v, int) and v >= 10 and (v - 4) % 6 == 0, "6n+4 with n >= 1 (10, 16, 28, ...)"),
)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_config(cfg: DictConfig) -> None:
    """Raise a one-line ``ConfigError`` for a key its schema lacks, or the first key out of its range;
    absent keys are skipped."""
    _check_keys(cfg)
    if cfg.get("test") is False and cfg.get("test_curve"):
        raise ConfigError("test_curve=true reads the test split after every epoch: it needs test=true")
    for key, ok, must in RULES:
        value = OmegaConf.select(cfg, key, default=MISSING)
        if value is MISSING:
            continue
        if isinstance(value, bool) or not ok(value):
            raise ConfigError(f"{key} must be {must}, got {value!r}")


def _arguments(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes, through the ``**kwargs`` its ``__init__`` passes up."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {n for n, p in inspect.signature(init).parameters.items()
                      if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names


def _known_keys(node: DictConfig, schema: type) -> list[str]:
    """The schema's keys, and for the Trainer and a datamodule every argument their constructor takes:
    ``+trainer.max_steps=100`` or ``+dataset.num_train=512`` (a datamodule of your own) are fine."""
    known = [f.name for f in fields(schema)]
    if issubclass(schema, TrainerConfig):
        import pytorch_lightning as pl  # here, not at import: `import src` registers this schema and stays light

        known += sorted(_arguments(pl.Trainer) - set(known))
    elif issubclass(schema, DatasetConfig) and isinstance(node.get("_target_"), str):
        target = _target_class(node._target_)
        if target is not None:
            known += sorted(_arguments(target) - set(known))
    return known


def _target_class(path: str) -> Optional[type]:
    """The class a ``_target_`` names; None for a factory function (``dataset=folder``'s) or an unknown path,
    which instantiate reports with its own message. Not ``hydra.utils.get_class``: it logs an ERROR line
    ("Error getting class at ...") before raising, a false error on every folder run; ``get_object`` logs one
    for an unknown path, hence its logger muted here."""
    hydra_log = logging.getLogger("hydra.utils")
    level, hydra_log.level = hydra_log.level, logging.CRITICAL
    try:
        target = get_object(path)
    except Exception:
        return None
    finally:
        hydra_log.setLevel(level)
    return target if isinstance(target, type) else None


def did_you_mean(key: str, known: list[str], prefix: str = "") -> str:
    """``did you mean trainer.max_epochs?`` for the closest known key (difflib), or "" when none is close."""
    close = difflib.get_close_matches(key, [k for k in known if not k.startswith("_")], n=1)
    return f"did you mean {prefix}{close[0]}?" if close else ""


def schema_keys(path: str) -> list[str]:
    """The keys the schema knows at a dotted config path (``trainer``, ``dataset``, ``""``), for hints."""
    schema = {"": Config, "trainer": TrainerConfig, "model": ModelConfig, "optimizer": OptimizerConfig,
              "dataset": DatasetConfig}.get(path)
    return _known_keys(OmegaConf.create({}), schema) if schema is not None else []


def _check_keys(node: DictConfig, prefix: str = "") -> None:
    """Hydra adds ``+trainer.foo=1`` even to a typed node (``force_add``): refuse keys the schema lacks here."""
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        known = _known_keys(node, schema)
        extra = [k for k in node if k not in known]
        if extra:
            hint = did_you_mean(extra[0], known, prefix)
            raise ConfigError(f"{prefix}{extra[0]} is not a key of {prefix.rstrip('.') or 'the config'} "
                              f"({hint + '; ' if hint else 'a typo? '}its keys: "
                              f"{', '.join(k for k in known[:40] if not k.startswith('_'))}"
                              f"{', ...' if len(known) > 40 else ''})")
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _check_keys(child, f"{prefix}{key}.")


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
