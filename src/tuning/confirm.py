"""The confirmation: each arm's best values trained on fresh seeds (``tune.confirm_seeds``) with the test pass,
then ``src.report``'s methods table with a ``tuned`` column, and each study's figures beside it.

    <tune.dir>/confirm/arm=<arm>,seed=<seed>/   the runs (resumable: the same command skips finished ones)
    <tune.dir>/confirm/table.md, table.csv       src.report's table, plus the tuned column
    <tune.dir>/confirm/<arm>_history.png         optuna.visualization.matplotlib: optimisation history
    <tune.dir>/confirm/<arm>_importances.png     and parameter importances (fANOVA)

The runs' configs are not saved as ``.hydra/config.yaml``: the tuned values differ between arms by design, and
src.report would read them as different settings and compare no arm with the baseline. Each run's
``tuned.yaml`` holds them instead.
"""
import contextlib
import logging
import warnings
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from src.run.errors import ConfigError
from src.run.lock import run_lock
from src.run.records import read_record, write_atomic
from src.report.page import COMMAND_FILE
from src.report.tables import report, write_csv
from src.run.signals import stop_on_signal
from src.train import train
from src.tuning.space import at_edge, edge_warnings, with_params
from src.tuning.study import STORAGE_FILES, counted, storage
from src.tuning.tuner import CONFIG

log = logging.getLogger(__name__)


def studies(tune_dir: Path, kind: str) -> dict[str, optuna.Study]:
    """Every arm's study under ``tune_dir``, by arm; refused unless each has used its whole budget."""
    found = {}
    for study_dir in sorted(p.parent for p in Path(tune_dir).glob(f"*/{STORAGE_FILES[kind]}")):
        arm = study_dir.name
        study = optuna.load_study(study_name=arm, storage=storage(study_dir, kind))
        n_trials = study.user_attrs["budget"]["n_trials"]
        running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        if counted(study) < n_trials or running:
            raise ConfigError(f"the study of {arm} has {counted(study)} of {n_trials} trials"
                              f"{f', {len(running)} unfinished' if running else ''}: run its tuning command "
                              "again to finish it first")
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise ConfigError(f"the study of {arm} has no complete trial: nothing to confirm")
        found[arm] = study
    if not found:
        raise ConfigError(f"no study in {tune_dir}: tune first (python -m src.tune -m experiment=<tune preset>)")
    return found


def tuned_cell(study: optuna.Study) -> str:
    """``6 trials × 5 epochs (4 complete, 2 pruned); best val 3.10 %: optimizer.lr=0.31, ...``; a value in the
    outer 5 % of its range is followed by ``(at the edge: top of 0.01-2)``."""
    budget = study.user_attrs["budget"]
    states = [t.state for t in study.get_trials(deepcopy=False)]
    parts = [f"{states.count(s)} {s.name.lower()}" for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
             if states.count(s)]
    best = study.best_trial
    edges = at_edge(best.params, best.distributions)
    values = ", ".join((f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
                       + (f" (at the edge: {edges[k]} of {best.distributions[k].low:g}-{best.distributions[k].high:g})"
                          if k in edges else "")
                       for k, v in best.params.items())
    epochs = f"{budget['epochs']} epoch{'s' if budget['epochs'] != 1 else ''}"
    return (f"{budget['n_trials']} trials × {epochs} ({', '.join(parts)}); "
            f"best val {study.best_value:.2f} %: {values}")


def confirm(tune: DictConfig, command: str = "") -> dict:
    """Train every arm's best trial on the confirmation seeds, then write the table and the figures; ``command``
    (the confirmation's own) goes to its report page, which has no multirun.yaml to read it from."""
    tune_dir, out = Path(tune.dir), Path(tune.dir) / "confirm"
    found = studies(tune_dir, tune.storage)
    if command:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / COMMAND_FILE, lambda f: f.write(command + "\n"))
    arm_of = {}
    for arm, study in found.items():
        base = OmegaConf.load(tune_dir / arm / CONFIG)
        arm_of[(base.method.name, base.case.name)] = arm
        for seed in tune.confirm_seeds:
            cfg = with_params(base, study.best_params, seed=int(seed), test=True)
            run_dir = out / f"arm={arm},seed={seed}"
            with contextlib.ExitStack() as stack:
                stack.enter_context(run_lock(run_dir))
                if read_record(run_dir).get("status") != "finished":
                    log.info("confirming %s, seed %s", arm, seed)
                tuned = OmegaConf.create({"arm": arm, "trial": study.best_trial.number, **study.best_params})
                write_atomic(run_dir / "tuned.yaml", lambda f: f.write(OmegaConf.to_yaml(tuned)))
                guard = stack.enter_context(stop_on_signal(run_dir, cfg))
                train(cfg, run_dir, callbacks=[guard.callback()])
    result = report([out], out)
    cells = {arm: tuned_cell(study) for arm, study in found.items()}
    for row in result["rows"]:
        row["tuned"] = cells.get(arm_of.get((row["method"], row["case"])), "")
    markdown = with_column(result["markdown"], "tuned", [row["tuned"] for row in result["rows"]])
    (out / "table.md").write_text(markdown)
    write_csv(result["rows"], out / "table.csv")
    figures = [path for arm, study in found.items() for path in study_figures(study, out / arm)]
    for arm, study in found.items():  # last, where a reader of the log looks
        for line in edge_warnings(arm, study.best_trial):
            log.warning(line)
    return {"rows": result["rows"], "markdown": markdown, "out": out, "figures": figures}


def with_column(markdown: str, header: str, cells: list[str]) -> str:
    """``markdown``'s first table (the report's "Does it help?", one row per group in the rows' order) with one more
    column: ``header``, then ``cells`` row by row."""
    lines = markdown.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    if end - start - 2 != len(cells):
        raise ValueError(f"the report's first table has {end - start - 2} rows for {len(cells)} groups")
    lines[start] += f" {header} |"
    lines[start + 1] += "---|"
    for i, cell in enumerate(cells):
        lines[start + 2 + i] += f" {cell.replace('|', '/')} |"
    return "\n".join(lines)


def study_figures(study: optuna.Study, prefix: Path) -> list[Path]:
    """Optimisation history and parameter importances (matplotlib backend), as ``<prefix>_*.png``."""
    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    paths = []
    figures = [("history", lambda: vis.plot_optimization_history(study))]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= 2 and study.best_params:  # importances need two complete trials
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        figures.append(("importances", lambda: vis.plot_param_importances(study, evaluator=evaluator)))
    for name, plot in figures:
        try:
            axes = plot()
        except (ValueError, RuntimeError) as e:  # e.g. every complete trial with the same values
            log.warning("no %s figure for %s: %s", name, study.study_name, e)
            continue
        if name == "history":
            axes.set_ylabel("validation error (%)")
        axes.set_title(f"{study.study_name}: {axes.get_title().lower()}")
        path = prefix.with_name(f"{prefix.name}_{name}.png")
        axes.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        paths.append(path)
    return paths
