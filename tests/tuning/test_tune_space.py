"""tune.space: each method's own knobs and ranges, and the warning when a best value lies at the edge of its range."""
import logging
import math

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import CONF
from src.run.config import check_config
from src.tuning.confirm import tuned_cell
from src.tuning.space import EDGE, at_edge, edge_warnings, search_space, with_params
from src.tuning.study import open_study
from src.tuning.tuner import check_tune
from test_presets import sweep_values

Float, Int, Cat = (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution,
                   optuna.distributions.CategoricalDistribution)
LR = Float(0.01, 2.0, log=True)  # the range of issue 31's study


def log_point(low, high, share):
    """The value at ``share`` of a log range, computed by hand: low · (high/low)^share."""
    return low * (high / low) ** share


@pytest.mark.parametrize("value, end", [
    (1.61, "top"),  # issue 31: seven arms' best LR, at 96 % of 0.01-2.0 on its log scale
    (1.99, "top"),  # the heads'
    (log_point(0.01, 2.0, 1 - EDGE + 0.001), "top"),
    (log_point(0.01, 2.0, 1 - EDGE - 0.001), None),  # 0.95 of the log scale is 1.53: linearly 76 % of the range
    (0.3, None),
    (log_point(0.01, 2.0, EDGE + 0.001), None),
    (log_point(0.01, 2.0, EDGE - 0.001), "bottom"),  # 0.013: linearly 0.15 % of the range, not 5 %
    (0.01, "bottom")])
def test_the_edge_is_the_outer_5_percent_on_the_log_scale(value, end):
    assert at_edge({"optimizer.lr": value}, {"optimizer.lr": LR}) == ({"optimizer.lr": end} if end else {})


def test_the_edge_of_a_linear_range_of_an_integer_range_and_no_edge_for_choices():
    space = {"a": Float(0.0, 1.0), "n": Int(10, 110), "d": Cat(["arccos", "euc"])}
    assert at_edge({"a": 0.96, "n": 14, "d": "euc"}, space) == {"a": "top", "n": "bottom"}
    assert at_edge({"a": 0.94, "n": 16, "d": "arccos"}, space) == {}
    assert math.isclose(log_point(0.03, 10.0, 0.95), 0.03 * (10 / 0.03) ** 0.95)


def study_with_best(tmp_path, params, distributions):
    cfg = OmegaConf.create({"storage": "sqlite", "seed": 0, "startup_trials": 1, "pruner": None, "n_trials": 2})
    study = open_study(tmp_path / "arm", "arm", cfg, 5)
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=3.0))
    worse = {k: (d.low if isinstance(d, (Float, Int)) else d.choices[0]) for k, d in distributions.items()}
    study.add_trial(optuna.trial.create_trial(params=worse, distributions=distributions, value=9.0))
    return study


def test_the_confirmation_table_marks_a_value_at_the_edge(tmp_path):
    weight = Float(0.03, 10.0, log=True)
    study = study_with_best(tmp_path, {"optimizer.lr": 1.99, "method.weight": 0.5},
                            {"optimizer.lr": LR, "method.weight": weight})
    assert tuned_cell(study) == ("2 trials × 5 epochs (2 complete); best val 3.00 %: "
                                 "optimizer.lr=1.99 (at the edge: top of 0.01-2), method.weight=0.5")
    assert edge_warnings("heads_case1", study.best_trial) == [
        "heads_case1: the best optimizer.lr=1.99 lies at the top edge of its range 0.01-2 (log): the optimum may "
        "lie outside it; widen its range in tune.space and tune again"]


def test_the_tuner_warns_when_its_study_ends_with_a_best_value_at_the_edge(tmp_path, caplog):
    from src.tuning.tuner import tune

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=tune_digits", "arm=baseline",
                                                       f"tune.dir={tmp_path}", "tune.n_trials=1"])
    study = open_study(tmp_path / "baseline", "baseline", cfg.tune, cfg.trainer.max_epochs)
    study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 1.99}, distributions={"optimizer.lr": LR},
                                              value=3.0))  # its whole budget: the tuner trains nothing
    with caplog.at_level(logging.WARNING, logger="src.tuning.tuner"):
        summary = tune(cfg, "baseline")
    assert summary["at_edge"] == edge_warnings("baseline", study.best_trial)
    assert len(summary["at_edge"]) == 1 and summary["at_edge"][0] in caplog.messages
    assert summary["at_edge"][0].startswith("baseline: the best optimizer.lr=1.99 lies at the top edge")


def test_a_method_replaces_or_drops_a_common_range():
    tune = OmegaConf.create({"space": {"common": {"optimizer.lr": {"low": 0.03, "high": 10.0, "log": True},
                                                  "optimizer.weight_decay": {"low": 1e-6, "high": 1e-2}},
                                       "hxe": {"optimizer.lr": {"low": 0.3, "high": 100.0, "log": True},
                                               "optimizer.weight_decay": None}}})
    assert search_space(tune, "hxe") == {"optimizer.lr": {"low": 0.3, "high": 100.0, "log": True}}
    assert search_space(tune, "hal")["optimizer.lr"]["low"] == 0.03


ARMS = ["baseline", "hal_case1", "hal_case2", "hal_case3", "hal_case4", "dks", "heads_case1", "hal_heads_case1",
        "proxydr", "hxe_case1", "soft_labels_case1", "haframe_case1", "hal_case1_random", "heads_case1_random",
        "hal_heads_case1_random", "hxe_case1_random", "soft_labels_case1_random", "haframe_case1_random"]
# Each method's own knobs (beside the learning rate) and, where its loss's scale differs from CE's, its own LR range.
KNOBS = {"hal": set(), "dks": {"method.weight"}, "heads": {"method.weight"}, "hal_heads": {"method.weight"},
         "proxydr": {"method.distance", "method.dynamic_scale"}, "hxe": {"method.alpha"},
         "soft_labels": {"method.beta"}, "haframe": {"method.haf_gamma", "method.bn_momentum"}}
LR_LOW = {"hxe": 0.3, "soft_labels": 0.3}  # ~10x CE's: their losses are 1/13 and 1/K of CE's on digits


def test_tune_methods_digits_tunes_every_method_arm_with_its_own_knobs():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=tune_methods_digits"], return_hydra_config=True)
        assert sweep_values(cfg.hydra.sweeper.params) == {"arm": ARMS}
        assert (cfg.dataset.name, cfg.dataset.download, cfg.trainer.accelerator, cfg.tune.dir) == \
            ("digits", False, "auto", "outputs/tune/tune_methods_digits")
        seen = set()
        for arm in ARMS:
            one = compose(config_name="config", overrides=["experiment=tune_methods_digits", f"arm={arm}"])
            check_config(one)
            space = search_space(check_tune(one), one.method.name)
            assert set(space) == {"optimizer.lr"} | KNOBS[one.method.name], arm
            assert space["optimizer.lr"]["low"] == LR_LOW.get(one.method.name, 0.03), arm
            assert arm.endswith("_random") == (one.case.name == "random"), arm
            # every knob is a key of the arm's config, and a trial's config takes its values
            trial = with_params(one, {k: (s["choices"][-1] if "choices" in s else s["high"]) for k, s in space.items()})
            if one.method.name == "haframe":  # the choice reaches the method, over its null (official) default
                assert (one.method.bn_momentum, instantiate(trial.method).bn_momentum) == (None, 0.1)
            seen.add(one.method.name)
    assert seen == set(KNOBS)
