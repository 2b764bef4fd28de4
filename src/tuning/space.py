"""The search space of an arm, from config (``tune.space``): the common keys and those of the arm's method.

A parameter is a dotted config key with a range, ``{low, high, log}`` (integers when both ends are integers),
or a list of ``choices``. A trial's config is the arm's config with the suggested values set, trained with
``test=false``: it fits and validates, and never reads the test split.
"""
from typing import Any

import optuna
from omegaconf import MISSING, DictConfig, OmegaConf

from src.run.errors import ConfigError


def search_space(tune: DictConfig, method: str) -> dict[str, dict]:
    """``tune.space.common`` and ``tune.space.<method>`` (a method without an entry tunes the common keys)."""
    space = OmegaConf.to_container(tune.get("space") or OmegaConf.create({}), resolve=True)
    merged = {**(space.get("common") or {}), **(space.get(method) or {})}
    for key, spec in merged.items():
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
            raise ConfigError(f"tune.space: {key} needs low and high (and log), or choices; got {spec!r}")
        if "low" in spec and not spec["low"] < spec["high"]:
            raise ConfigError(f"tune.space: {key}: low must be below high, got {spec['low']} and {spec['high']}")
    return merged


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict[str, Any]:
    """The trial's value for every key of ``space``. A trial that already has a value (one adopted after a
    kill) gets that value back: Optuna does not sample a parameter twice."""
    params = {}
    for key, spec in space.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], log=bool(spec.get("log", False)))
        else:
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              log=bool(spec.get("log", False)))
    return params


def with_params(cfg: DictConfig, params: dict[str, Any], **fields: Any) -> DictConfig:
    """A copy of ``cfg`` with each dotted key of ``params`` (and each top-level ``fields`` key) set; a key the
    config lacks is one error line (a typo in ``tune.space`` must not tune nothing)."""
    cfg = cfg.copy()
    for key, value in {**params, **fields}.items():
        if OmegaConf.select(cfg, key, default=MISSING) is MISSING:
            raise ConfigError(f"tune.space: {key} is not a key of this arm's config")
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def trial_config(cfg: DictConfig, params: dict[str, Any]) -> DictConfig:
    """A trial's config: fit and validate only (``test=false``, no per-epoch test curve)."""
    return with_params(cfg, params, test=False, test_curve=False)
