"""The search space of an arm, from config (``tune.space``): the common keys and those of the arm's method.

A parameter is a dotted config key with a range, ``{low, high, log}`` (integers when both ends are integers),
or a list of ``choices``; a method's entry replaces a common key's range (HXE's learning rates lie higher than
CE's), and ``null`` drops it for that method. A best value in the outer ``EDGE`` of its range (``at_edge``) says
the optimum may lie outside it: the tuner and the confirmation warn, and the table marks it. A trial's config is
the arm's config with the suggested values set, trained with ``test=false``: it fits and validates, and never
reads the test split.
"""
import math
from typing import Any

import optuna
from omegaconf import MISSING, DictConfig, OmegaConf

from src.run.errors import ConfigError

EDGE = 0.05  # the outer share of a range, at each end (on the log scale where the range is log), that is "the edge"


def search_space(tune: DictConfig, method: str) -> dict[str, dict]:
    """``tune.space.common`` and ``tune.space.<method>``: a method's entry replaces a common key's range, and
    ``null`` drops the key (a method without an entry tunes the common keys)."""
    space = OmegaConf.to_container(tune.get("space") or OmegaConf.create({}), resolve=True)
    merged = {**(space.get("common") or {}), **(space.get(method) or {})}
    merged = {key: spec for key, spec in merged.items() if spec is not None}
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


def at_edge(params: dict[str, Any], distributions: dict[str, optuna.distributions.BaseDistribution],
            share: float = EDGE) -> dict[str, str]:
    """The keys of ``params`` (a trial's values) whose value lies in the outer ``share`` of its range, each with
    its end, ``"top"`` or ``"bottom"``; the position is measured on the log scale where the range is log (1.61 in
    0.01-2.0 is at 96 % of it). Choices have no edge."""
    found = {}
    for key, value in params.items():
        dist = distributions[key]
        if not isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
            continue
        scale = math.log if dist.log else float
        position = (scale(value) - scale(dist.low)) / (scale(dist.high) - scale(dist.low))
        if position >= 1 - share:
            found[key] = "top"
        elif position <= share:
            found[key] = "bottom"
    return found


def edge_warnings(arm: str, trial: optuna.trial.FrozenTrial) -> list[str]:
    """One line per value of ``trial`` (an arm's best) at the edge of its range."""
    lines = []
    for key, end in at_edge(trial.params, trial.distributions).items():
        dist = trial.distributions[key]
        lines.append(f"{arm}: the best {key}={trial.params[key]:.4g} lies at the {end} edge of its range "
                     f"{dist.low:g}-{dist.high:g}{' (log)' if dist.log else ''}: the optimum may lie outside it; "
                     "widen its range in tune.space and tune again")
    return lines


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
