"""Entry point: ``python -m src.tune -m experiment=tune_digits`` tunes every arm of a tune preset, one Optuna
study per arm (``arm=hal_case1`` for one); ``python -m src.tune experiment=tune_digits tune.confirm=true`` then
trains each arm's best values on fresh seeds and writes the methods table with a ``tuned`` column.

A thin driver over Optuna's ask-and-tell API (src/tuning/): each trial is a run of ``src.train.train`` in its
own dir, so resume, pruning and launchers stay this project's own (docs/tuning.md says why).
"""
import logging
import shlex
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.run import launch
from src.run.console import quiet
from src.run.errors import ConfigError, exit_code

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    from src.tuning.confirm import confirm
    from src.tuning.tuner import check_tune, tune

    settings = check_tune(cfg)
    if settings.confirm:
        result = confirm(settings, "python -m src.tune " + shlex.join(HydraConfig.get().overrides.task))
        print(result["markdown"])
        log.info("confirmation: wrote %s, table.csv and %d study figures", result["out"] / "table.md",
                 len(result["figures"]))
        return result
    arm = HydraConfig.get().runtime.choices.get("arm")
    if arm is None:
        raise ConfigError("choose the arm to tune: arm=<conf/arm option>, or -m for every arm of the preset")
    summary = tune(cfg, arm)
    best = (f"; best validation error {summary['best_value']:.2f} % with "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary["best_params"].items())
            ) if "best_value" in summary else ""
    log.info("study %s: %s%s", summary["study"], ", ".join(f"{n} {s}" for s, n in sorted(summary["trials"].items())),
             best)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    launch.entered()
    quiet()
    try:
        return run(cfg)
    except Exception as e:
        sys.exit(exit_code(e))


if __name__ == "__main__":
    launch.cli(main)
