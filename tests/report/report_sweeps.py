"""A hand-made sweep the size of ``experiment=methods_digits`` (11 arms x 5 seeds), every field a run writes
filled, and the random-tree control's arms: what src.report's tables, figures and page are tested on."""
from pathlib import Path

import numpy as np
import yaml

from helpers import write_run

SEEDS = range(5)
# arm -> (method, case, test error of seed 0, its shift per seed)
ARMS = {
    "baseline": ("hal", "baseline", 1.50), "hal_case1": ("hal", "case1", 0.80), "hal_case2": ("hal", "case2", 1.10),
    "hal_case3": ("hal", "case3", 1.20), "hal_case4": ("hal", "case4", 1.00), "dks": ("dks", "baseline", 1.60),
    "hal_dks_case1": ("hal_dks", "case1", 1.20), "heads_case1": ("heads", "case1", 1.40),
    "heads_case4": ("heads", "case4", 1.45), "hal_heads_case1": ("hal_heads", "case1", 1.30),
    "proxydr": ("proxydr", "baseline", 1.55),
}
# random-tree arms: (method, the case whose shape it copies, test error of seed 0)
RANDOM_ARMS = {"hal_random_case1": ("hal", "case1", 1.40), "heads_random_case4": ("heads", "case4", 1.45)}


def _history(seed: int, epochs: int = 4) -> dict:
    history = {"train/loss": [1.0 / (e + 1) + 0.01 * seed for e in range(epochs)],
               "curve/test_loss": [1.2 / (e + 1) + 0.01 * seed for e in range(epochs)]}
    for stage in (1, 2, 3):
        history[f"probe/stage{stage}_superclass_acc"] = [60 + 10 * stage + e for e in range(epochs)]
        history[f"probe/stage{stage}_class_acc"] = [30 + 10 * stage + e for e in range(epochs)]
    return history


def _record(method: str, case: str, error: float, seed: int, rng: np.random.Generator) -> dict:
    noise = rng.normal(0, 0.05, size=8)
    block = method.startswith("hal") and case != "baseline"
    return dict(
        dataset="digits", method=method, case=case, position=3, seed=seed, epochs=4, git_commit="0123456789abcdef",
        threads=1, machine="vm: AMD EPYC, 2 cores", test_error=error + noise[0],
        test_error_inferred=error + 0.3 + noise[1],
        test_error_shuffled=error + 0.6 + noise[2], test_error_crm=error + 0.1 + noise[3],
        test_error_masked={"case1": 0.5 + noise[4], "case4": 0.2 + noise[4]} if not block else {case: 0.4 + noise[4]},
        mistake_severity=1.6 + noise[5], hierarchical_distance={"1": 0.02, "5": 1.27 + noise[6], "20": 2.1},
        ece=0.02 + abs(noise[7]) / 10, level_acc={"class": 100 - error - 0.3 - noise[1], "coarse": 99.0},
        mistake_severity_crm=1.5 + noise[6], superclass_acc=99.0 + noise[2], within_superclass_mistakes=35.0,
        hierarchy_mean_corr=0.3 + noise[3], hierarchy_rf=0.97, train_images_per_s=1000.0 - 100 * len(method),
        flops_per_train_image=4.56e6, params_train=77562 + 100 * len(method), params_inference=77562,
        hierarchy_name="digits")


def write_config(run: Path, method: str, case: dict) -> None:
    config = {"dataset": {"name": "digits"}, "method": {"name": method, "position": 3}, "case": case,
              "eval": {"metrics_protocol": "inferred"}, "trainer": {"max_epochs": 4}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


def methods_digits_sweep(sweep: Path, random_tree: bool = True, arms=None, seeds=SEEDS, curves: bool = True) -> Path:
    """The sweep dir, with ``multirun.yaml`` as Hydra leaves it, one failed and one unfinished run; ``arms``:
    only these arms (all by default), ``curves``: with history.csv and aux_scores.npz (the slow figures)."""
    rng = np.random.default_rng(0)
    arms = {a: v for a, v in {**ARMS, **(RANDOM_ARMS if random_tree else {})}.items() if arms is None or a in arms}
    for arm, (method, case, error) in arms.items():
        random = arm in RANDOM_ARMS
        for seed in seeds:
            record = _record(method, "random" if random else case, error + 0.1 * seed, seed, rng)
            aux = None
            if curves and method.startswith("hal") and case != "baseline" and seed == 0:
                aux = {"score": rng.random(60), "superclass": np.repeat([0, 1], 30), "label": np.arange(60) % 10}
            run = write_run(sweep, f"arm={arm},seed={seed}", history=_history(seed) if curves else None, aux=aux, **record)
            write_config(run, method, {"name": "random", "of": case, "shuffle_seed": seed} if random else
                         {"name": case})
    failed = write_run(sweep, "arm=proxydr,seed=5", dataset="digits", method="proxydr", case="baseline", seed=5,
                       status="failed", error="DivergenceError: training loss became non-finite in epoch 3")
    write_config(failed, "proxydr", {"name": "baseline"})
    running = write_run(sweep, "arm=dks,seed=5", dataset="digits", method="dks", case="baseline", seed=5,
                        status="running")
    write_config(running, "dks", {"name": "baseline"})
    multirun = {"hydra": {"overrides": {"task": ["experiment=methods_digits", "threads=1"]}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    return sweep
