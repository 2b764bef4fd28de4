"""Every arm of the methods presets composes and builds (network + method + case), the random-tree arms included."""
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from helpers import CONF, FAST, compose_cfg


def sweep_values(params) -> dict[str, list[str]]:
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed}


def _arms(preset):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    return sweep_values(cfg.hydra.sweeper.params)["arm"]


def test_every_hint_using_method_has_a_random_tree_arm():
    for preset, of in (("methods_digits", "case1"), ("methods_cifar100", "coarse")):
        arms = _arms(preset)
        random = [a for a in arms if a.endswith("_random")]
        hint_using = {a.removesuffix(f"_{of}") for a in arms if a.endswith(f"_{of}")}
        assert {a.removesuffix(f"_{of}_random") for a in random} == hint_using
        for arm in random:
            cfg = compose_cfg([f"arm={arm}"])
            assert (cfg.case.name, cfg.case.of, cfg.case.shuffle_seed) == ("random", of, 0)


@pytest.mark.parametrize("arm", [a for a in _arms("methods_digits") if a.startswith(("hxe", "hal_hxe", "soft", "hal_soft",
                                                                                        "haframe"))])
def test_new_arms_build_on_digits(arm, tmp_path):
    from src.train import build

    cfg = compose_cfg([*FAST, f"arm={arm}"])
    _, module, _ = build(cfg, tmp_path)
    assert module.method.name == cfg.method.name and module.method.tree is not None
    assert module.has_auxiliary == cfg.method.name.startswith("hal_")


@pytest.mark.parametrize("method", ["hxe", "hal_hxe", "soft_labels", "hal_soft_labels", "haframe"])
def test_tree_methods_need_a_case(method, tmp_path):
    from src.run.errors import ConfigError
    from src.train import build

    with pytest.raises(ConfigError, match="needs superclasses") as error:
        build(compose_cfg([*FAST, f"method={method}", "case=baseline"]), tmp_path)
    assert "\n" not in str(error.value)


def test_hal_hxe_trains_hxe_of_the_main_head_with_the_block_fed(tmp_path):
    import torch

    from src.models.hxe import hierarchical_cross_entropy
    from src.train import build

    datamodule, module, _ = build(compose_cfg([*FAST, "method=hal_hxe", "case=case2"]), tmp_path)
    images, superclass, label = (t[:16] for t in datamodule.splits["train"])
    x = (images.float() / 255 - datamodule.mean.view(1, -1, 1, 1)) / datamodule.std.view(1, -1, 1, 1)
    output = module(x, superclass)
    assert output.auxiliary_score is not None and module.method.tree.name == "case2"
    expected = hierarchical_cross_entropy(output.logits, label, module.method.tree, 0.1)
    torch.testing.assert_close(module.method.loss(output, label, superclass), expected)
