"""Range checks on the composed config (``check_config``) and the check that every key is one the schema knows.

``check_config`` works on any DictConfig, with or without the schema: each violation is one ``ConfigError`` line
naming the key. The schema itself (dataclasses, registered with Hydra at import) is ``src/run/schema.py``.
"""
import difflib
import inspect
import logging
from dataclasses import fields, is_dataclass
from typing import Any, Optional

from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf

from src.run.errors import ConfigError
from src.run.schema import Config, DatasetConfig, ModelConfig, OptimizerConfig, TrainerConfig  # registers it

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
