"""The paper's figures from a report's groups of runs, as PNG and in TensorBoard.

Figs 2/4/6: train and test (or validation) loss per epoch, baseline against each case, mean ± std over
seeds, from each run's ``history.csv``. Figs 3/5/7: the auxiliary score of every training image at the
end of training, grouped by superclass, from ``aux_scores.npz``. Beyond the paper: accuracy of the linear
probes fitted after every epoch (``probe/stage{k}_*`` columns of ``history.csv``), and every row's Δ and fair Δ
with their 95 % intervals (``deltas_*``, from the report's rows). A group is ``src.report.runs.Group``.
"""
import csv
import math
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from src.report.paper import PAPER_FIGURES  # noqa: E402
from src.report.runs import Group, case_key  # noqa: E402
from src.report.tensorboard import write_hparams  # noqa: E402

PROBE_STAGES = (1, 2, 3)
LOSS_COLUMNS = 4


def read_history(run_dir: Path) -> dict[str, np.ndarray]:
    """history.csv -> {column: values indexed by epoch (NaN where missing)}; {} if absent or unreadable."""
    try:
        with open(run_dir / "history.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        epochs = [int(r["epoch"]) for r in rows]
        if epochs and min(epochs) >= 1:  # counted from 1 (since issue 36); a run's history starts at its first epoch
            epochs = [e - 1 for e in epochs]
        columns = {}
        for key in (rows[0] if rows else {}):
            values = np.full(max(epochs) + 1, np.nan)
            for e, r in zip(epochs, rows):
                values[e] = float(r[key]) if r.get(key) not in (None, "") else np.nan
            columns[key] = values
        return columns
    except (OSError, UnicodeDecodeError, KeyError, ValueError, csv.Error):
        return {}


def curve_band(histories: list[dict], key: str) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Epochs (1-based), mean and std over runs of column ``key``; None if a run lacks it."""
    if not histories or any(key not in h for h in histories):
        return None
    length = max(len(h[key]) for h in histories)
    stacked = np.full((len(histories), length), np.nan)
    for i, h in enumerate(histories):
        stacked[i, :len(h[key])] = h[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch that no run reached: NaN, not a warning
        mean = np.nanmean(stacked, axis=0)
        std = np.nanstd(stacked, axis=0, ddof=1) if len(histories) > 1 else np.zeros(length)
    return np.arange(1, length + 1), mean, np.nan_to_num(std)


def _panels(groups: list[Group]) -> dict[tuple, dict[str, Group]]:
    """(dataset, depth, settings) -> {label: group}: one figure each. The label is the case for the paper's
    HAL, else method, position and case."""
    panels: dict[tuple, dict[str, Group]] = defaultdict(dict)
    for g in groups:
        if g.finished:
            panels[(g.dataset, g.depth, g.settings)][g.label] = g
    return panels


def _figure_name(kind: str, dataset: str, depth, settings: str, all_settings: set) -> str:
    slug = "" if len(all_settings) <= 1 or not settings else "_" + re.sub(r"[^\w.=-]+", "_", settings)[:80]
    return f"{kind}_{dataset}_depth{depth}{slug}"


def _title(dataset: str, depth, settings: str, figure: str) -> str:
    paper = f" (paper {figure})" if figure else ""
    return f"{dataset}, depth {depth}{', ' + settings if settings else ''}{paper}"


def _wrapped(panels: int, columns: int, height: float, **kwargs):
    """A figure of ``panels`` panels, at most ``columns`` to a row (a methods sweep has a dozen), the unused
    places of the last row removed."""
    columns = min(panels, columns)
    rows = math.ceil(panels / columns)
    fig, grid = plt.subplots(rows, columns, figsize=(max(6.0, 4.2 * columns), 0.6 + height * rows), squeeze=False,
                             **kwargs)
    for ax in grid.flatten()[panels:]:
        fig.delaxes(ax)
    return fig, grid


# The training loss (``train/loss``) is each method's own (src/models/<method>.py); validation and test losses are
# the main head's cross-entropy for every method. The methods whose training loss is not plain cross-entropy:
TRAIN_LOSSES = {"hxe": "HXE", "hal_hxe": "HXE", "soft_labels": "soft-label KL", "hal_soft_labels": "soft-label KL",
                "haframe": "HAFrame CE + cosine", "dks": "CE + DKS synergy", "hal_dks": "CE + DKS synergy",
                "heads": "CE + heads' CE", "hal_heads": "CE + heads' CE", "proxydr": "ProxyDR loss"}
CROSS_ENTROPY = "cross-entropy"


def loss_figure(dataset: str, depth, settings: str, cases: dict[str, Group]):
    """Figs 2/4/6: train and test loss per epoch, baseline against each case, mean ± std over seeds; each training
    curve named by its method's loss (``TRAIN_LOSSES``)."""
    others = [c for c in sorted(cases, key=case_key) if c != "baseline"] or ["baseline"]
    histories = {c: [h for h in (read_history(r.dir) for r in g.finished) if h] for c, g in cases.items()}
    if not any(histories.values()):
        return None
    fig, grid = _wrapped(len(others), LOSS_COLUMNS, height=3.4, sharey=True)
    axes = grid.flatten()
    eval_names, losses = set(), set()
    for ax, case in zip(axes, others):
        for name, color in [("baseline", "0.45")] + ([(case, "C0")] if case != "baseline" else []):
            if name not in histories:
                continue
            runs = histories[name]
            eval_key, eval_name = ("curve/test_loss", "test") if curve_band(runs, "curve/test_loss") else \
                ("val/loss", "validation")
            train_loss = TRAIN_LOSSES.get(cases[name].method, CROSS_ENTROPY)
            losses.add(train_loss)
            for key, style, label in (("train/loss", "-", f"train {train_loss}"),
                                      (eval_key, "--", f"{eval_name} {CROSS_ENTROPY}")):
                band = curve_band(runs, key)
                if band is None:
                    continue
                if key == eval_key:
                    eval_names.add(eval_name)
                x, mean, std = band
                ax.plot(x, mean, style, color=color, label=f"{name} {label} (n={len(runs)})")
                ax.fill_between(x, np.clip(mean - std, 1e-6, None), mean + std, color=color, alpha=0.2, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{case} vs baseline" if case != "baseline" and histories.get("baseline") else case)
        ax.grid(alpha=0.3, which="both", lw=0.5)
        ax.legend(fontsize=7)
    for row in grid:
        row[0].set_ylabel("training loss / cross-entropy (log scale)" if losses - {CROSS_ENTROPY} else
                          "cross-entropy loss (log scale)")
    kind = "/".join(sorted(eval_names, reverse=True))
    fig.suptitle(f"Train{' and ' + kind if kind else ''} loss per epoch, mean ± std over seeds\n"
                 f"{_title(dataset, depth, settings, PAPER_FIGURES.get(dataset, ('', ''))[0])}", fontsize=10)
    fig.tight_layout()
    return fig


def aux_score_figure(dataset: str, depth, settings: str, cases: dict[str, Group]):
    """Figs 3/5/7: the auxiliary score of every training image at the end of training, by superclass.

    One run per case (its lowest seed): images sorted by superclass, then class.
    """
    panels = []
    for case in sorted(cases, key=case_key):
        runs = sorted((r for r in cases[case].finished if (r.dir / "aux_scores.npz").exists()),
                      key=lambda r: (r.record.get("seed") is None, r.record.get("seed")))
        if runs:
            panels.append((case, runs[0]))
    if not panels:
        return None
    fig, grid = _wrapped(len(panels), 3, height=3.8)
    for ax, (case, run) in zip(grid.flatten(), panels):
        data = np.load(run.dir / "aux_scores.npz")
        score, superclass, label = data["score"], data["superclass"], data["label"]
        order = np.lexsort((label, superclass))
        table = run.record.get("superclasses") or []
        for s in np.unique(superclass):
            idx = np.flatnonzero(superclass[order] == s)
            members = ",".join(str(c) for c, t in enumerate(table) if t == s)
            ax.scatter(idx, score[order][idx], s=2, color=f"C{int(s)}", rasterized=True,
                       label=f"superclass {s}" + (f": classes {members}" if members else ""))
        ax.set_xlabel("training image (sorted by superclass, then class)")
        ax.set_title(f"{case}: seed {run.record.get('seed')}, test error {run.record['test_error']:.2f} %",
                     fontsize=9)
        ax.grid(alpha=0.3, lw=0.5)
        ax.legend(fontsize=7, markerscale=4)
    for row in grid:
        row[0].set_ylabel("auxiliary score a = Σ_j |Σ_i w_ij y_i − x*_j|")
    fig.suptitle(f"Auxiliary score of every training image at the end of training\n"
                 f"{_title(dataset, depth, settings, PAPER_FIGURES.get(dataset, ('', ''))[1])}", fontsize=10)
    fig.tight_layout()
    return fig


def probe_figure(dataset: str, depth, settings: str, groups: dict[str, Group]):
    """Linear-probe accuracy per epoch for superclass and class, one line per stage and style per group,
    mean ± std over seeds; None where no run has probes."""
    panels = []
    for label, g in groups.items():
        runs = [h for h in (read_history(r.dir) for r in g.finished) if h]
        if any(k.startswith("probe/") for h in runs for k in h):
            panels.append((label, g, runs))
    if not panels:
        return None
    # A row per group (method / case), superclass and class side by side, a colour per stage.
    fig, axes = plt.subplots(len(panels), 2, figsize=(10.0, 1.2 + 2.1 * len(panels)), sharex=True,
                             sharey=True, squeeze=False)
    for row, (label, g, runs) in zip(axes, panels):
        for ax, target in zip(row, ("superclass", "class")):
            for stage in PROBE_STAGES:
                key = f"probe/stage{stage}_{target}_acc"
                band = curve_band([h for h in runs if key in h], key)
                if band is None:
                    continue
                x, mean, std = band
                ax.plot(x, mean, "-o", ms=3, color=f"C{stage - 1}", label=f"stage {stage}")
                ax.fill_between(x, mean - std, mean + std, color=f"C{stage - 1}", alpha=0.15, lw=0)
            ax.set_title(f"{label}: {target} probe (n={len(runs)})", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3, lw=0.5)
        row[0].set_ylabel("accuracy %")
    axes[0][0].legend(fontsize=7, loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    splits = sorted({str(r.record.get("probe_split") or "unrecorded") for _, g, _ in panels for r in g.finished})
    fig.suptitle(f"Linear probes on each stage's features per epoch, scored on the {' / '.join(splits)} split, "
                 f"mean ± std over seeds\n{_title(dataset, depth, settings, '')}", fontsize=10)
    fig.tight_layout()
    return fig


def deltas_figure(dataset: str, depth, settings: str, rows: list[dict]):
    """Δ vs baseline and fair Δ of every (method, case) row as points with their 95 % intervals as whiskers,
    the paper's Δ as a marker where it has one, a vertical line at 0; None without a Δ."""
    rows = [r for r in rows if not math.isnan(r["delta_vs_baseline"])]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8.0, 1.6 + 0.55 * len(rows)))
    labels = []
    for y, r in enumerate(rows):
        labels.append(Group(r["dataset"], r["depth"], r["settings"], r["case"], r["method"], r["position"]).label)
        for value, prefix, short, offset, color, name in (
                ("delta_vs_baseline", "delta", "", -0.12, "C0", "Δ vs baseline"),
                ("fair_delta", "fair_delta", "fair_", 0.12, "C1", "fair Δ (vs the baseline's masked error)")):
            x = r[value]
            if math.isnan(x):
                continue
            low, high = r[f"{prefix}_ci_low"], r[f"{prefix}_ci_high"]
            xerr = None if low is None else [[x - low], [high - x]]
            ax.errorbar(x, y + offset, xerr=xerr, fmt="o", color=color, capsize=3, ms=5,
                        label=name if name not in ax.get_legend_handles_labels()[1] else None)
            ax.annotate(r[f"{short}verdict"], (x, y + offset), xytext=(6, 2), textcoords="offset points", fontsize=7,
                        color=color)
        paper = r["paper_delta_vs_baseline"]
        if paper is not None and not math.isnan(paper):
            ax.plot(paper, y, "kx", ms=7, label="paper Δ (Table 2)" if "paper Δ (Table 2)" not in
                    ax.get_legend_handles_labels()[1] else None)
            if r.get("paper_differs"):  # the runs leave the paper's recipe: say how, at its marker
                ax.annotate(f"paper ≠ {r['paper_differs']}", (paper, y), xytext=(4, -9), textcoords="offset points",
                            fontsize=7, color="0.3")
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(range(len(rows)), labels)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("difference in test error, percentage points (negative = fewer errors)")
    ax.grid(alpha=0.3, axis="x", lw=0.5)
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))  # label -> handle; the paper's marker last
    ax.legend([handles[k] for k in sorted(handles, key=lambda k: k.startswith("paper"))],
              sorted(handles, key=lambda k: k.startswith("paper")), fontsize=7, loc="best")
    ax.set_title(f"Δ with 95 % t-intervals over seeds, verdicts after Holm\n{_title(dataset, depth, settings, '')}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def write_figures(groups: list[Group], rows: list[dict], out: Path, table: str) -> list[Path]:
    """The PNGs into ``out``, and the same figures, the table and one HPARAMS entry per run into ``out/tb``."""
    from torch.utils.tensorboard import SummaryWriter

    written = []
    panels = _panels(groups)
    all_settings = {key[2] for key in panels}
    by_panel = defaultdict(list)
    for r in rows:
        by_panel[(r["dataset"], r["depth"], r["settings"])].append(r)
    writer = SummaryWriter(log_dir=str(out / "tb"))
    try:
        writer.add_text("table2", table)
        for (dataset, depth, settings), cases in panels.items():
            figures = [(kind, make(dataset, depth, settings, cases)) for kind, make in
                       (("loss", loss_figure), ("aux_scores", aux_score_figure), ("probes", probe_figure))]
            figures.append(("deltas", deltas_figure(dataset, depth, settings, by_panel[(dataset, depth, settings)])))
            for kind, fig in figures:
                if fig is None:
                    continue
                name = _figure_name(kind, dataset, depth, settings, all_settings)
                fig.savefig(out / f"{name}.png", dpi=120)
                writer.add_figure(f"{kind}/{name}", fig, close=True)
                written.append(out / f"{name}.png")
        write_hparams(writer, groups)
    finally:
        writer.close()
    return written
