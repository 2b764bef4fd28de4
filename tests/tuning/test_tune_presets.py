"""The tune presets: their own dirs, the arms they tune, one budget, a validation split and no test curve."""
import pytest
from hydra import compose, initialize_config_dir

from helpers import CONF
from src.run.config import check_config
from src.tuning.tuner import check_tune
from test_presets import TUNE_PRESETS, sweep_values


@pytest.mark.parametrize("preset, dataset, arms, n_trials, epochs", [
    ("tune_digits", "digits", ["baseline", "hal_case1"], 6, 5),
    ("tune_mnist", "mnist", ["baseline", "dks", "hal_case1", "heads_case1", "hal_heads_case1"], 20, 10),
    ("tune_cifar10", "cifar10", ["baseline", "dks", "hal_case1", "heads_case1", "hal_heads_case1"], 20, 30)])
def test_each_tune_preset(preset, dataset, arms, n_trials, epochs):
    assert preset in TUNE_PRESETS
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
        for arm in arms:  # every arm composes and passes the checks
            one = compose(config_name="config", overrides=[f"experiment={preset}", f"arm={arm}"])
            check_config(one)
            check_tune(one)
    assert sweep_values(cfg.hydra.sweeper.params) == {"arm": arms}
    assert (cfg.dataset.name, cfg.tune.dir, cfg.tune.n_trials, cfg.trainer.max_epochs) == \
        (dataset, f"outputs/tune/{preset}", n_trials, epochs)
    assert cfg.dataset.val_size > 0 and cfg.test_curve is False and cfg.test is True
    assert list(cfg.tune.confirm_seeds) == [100, 101, 102, 103, 104] and cfg.seed not in cfg.tune.confirm_seeds
