"""The trade-off figure: top-1 error against mistake severity, one point per method and case, with the
95 % t-interval over seeds on both axes (Making Better Mistakes, Bertinetto et al., CVPR 2020, Figure 1).

Each group gives up to two points (``src.report.runs.Group``):
- its own prediction, scored with ``eval.metrics_protocol`` (``inferred`` by default): top-1 error
  ``100 − level_acc.class`` and ``mistake_severity``. For a network without HAL's block that is its plain
  prediction (filled circle); for one with the block it is the protocol's: ``oracle`` (true superclass fed,
  filled), ``inferred`` (no hint, hollow square) or ``shuffled`` (a wrong hint, hollow diamond);
- CRM's prediction from the same softmax (no hint, hollow triangle): ``test_error_crm``, ``mistake_severity_crm``.
Colour: the method. Lower left is better on both.
"""
from collections import defaultdict
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from src.report.runs import Group  # noqa: E402
from src.report.stats import t_interval  # noqa: E402

# protocol -> (marker, filled, legend); "plain" is the prediction of a network without the block
MARKERS = {"plain": ("o", True, "the network's prediction"), "oracle": ("o", True, "oracle: true superclass fed"),
           "inferred": ("s", False, "no hint: inferred"), "shuffled": ("D", False, "wrong hint: shuffled"),
           "crm": ("^", False, "no hint: CRM")}


def _protocol(g: Group) -> str:
    protocols = {(r.config or {}).get("eval.metrics_protocol", "inferred") for r in g.finished}
    protocol = protocols.pop() if len(protocols) == 1 else "inferred"
    return protocol if g.has_block else "plain"


def _values(g: Group, name: str) -> dict:
    return dict(g.values(name))


def points(g: Group) -> list[tuple[str, list[float], list[float]]]:
    """(protocol, top-1 errors, severities) over the group's seeds that have both, for each point it gives."""
    found = []
    accuracy, severity = _values(g, "level_acc.class"), _values(g, "mistake_severity")
    seeds = [s for s in accuracy if s in severity]
    if seeds:
        found.append((_protocol(g), [100 - accuracy[s] for s in seeds], [severity[s] for s in seeds]))
    error, severity = _values(g, "test_error_crm"), _values(g, "mistake_severity_crm")
    seeds = [s for s in error if s in severity]
    if seeds:
        found.append(("crm", [error[s] for s in seeds], [severity[s] for s in seeds]))
    return found


def _span(values: list[float]) -> Optional[list[list[float]]]:
    interval = t_interval(values)
    return None if interval.low is None else [[interval.mean - interval.low], [interval.high - interval.mean]]


def tradeoff_figure(title: str, groups: list[Group]):
    """The figure for one dataset × depth × settings; None where no group has a severity."""
    drawn = [(g, p) for g in groups for p in points(g)]
    if not drawn:
        return None
    methods = sorted({g.method for g, _ in drawn}, key=lambda m: (m != "hal", m))
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20").colors  # one colour per method, up to 20
    colour = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    fig, ax = plt.subplots(figsize=(8.0, 5.5))
    centres = defaultdict(list)
    for g, (protocol, errors, severities) in drawn:
        marker, filled, _ = MARKERS.get(protocol, MARKERS["inferred"])
        x, y = sum(errors) / len(errors), sum(severities) / len(severities)
        c = colour[g.method]
        bars = ax.errorbar(x, y, xerr=_span(errors), yerr=_span(severities), fmt=marker, color=c, ms=7, capsize=2,
                           elinewidth=0.8, markerfacecolor=c if filled else "white", markeredgecolor=c, zorder=3)
        for artist in bars.lines[1] + bars.lines[2]:  # caps and whiskers fainter than the points
            artist.set_alpha(0.45)
        if not centres[id(g)]:  # one label per group, at its own prediction; its CRM point joined by a line
            ax.annotate(g.label, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7, color=c)
        centres[id(g)].append((x, y, c))
    for points_of_group in centres.values():
        if len(points_of_group) > 1:
            ax.plot([p[0] for p in points_of_group], [p[1] for p in points_of_group], ":", color=points_of_group[0][2],
                    lw=0.9, alpha=0.7, zorder=2)
    methods_legend = [Line2D([], [], ls="", marker="o", color=colour[m], label=m) for m in methods]
    used = {p for _, (p, _, _) in drawn}
    protocol_legend = [Line2D([], [], ls="", marker=MARKERS[p][0], color="0.3",
                              markerfacecolor="0.3" if MARKERS[p][1] else "white", label=MARKERS[p][2])
                       for p in MARKERS if p in used]
    first = ax.legend(handles=methods_legend, title="method", fontsize=7, title_fontsize=8, loc="upper left")
    ax.add_artist(first)
    ax.legend(handles=protocol_legend, title="prediction", fontsize=7, title_fontsize=8, loc="lower right")
    ax.set_xlabel("top-1 error % (mean, 95 % t-interval over seeds)")
    ax.set_ylabel("mistake severity: mean LCA height of the mistakes")
    ax.grid(alpha=0.3, lw=0.5)
    ax.set_title(f"Top-1 error against mistake severity (lower left is better)\n{title}", fontsize=10)
    fig.tight_layout()
    return fig


def write_tradeoff(groups: list[Group], out: Path) -> list[Path]:
    """``tradeoff_<dataset>_depth<depth>[_<settings>].png`` per panel that has a severity."""
    panels = defaultdict(list)
    for g in groups:
        if g.finished:
            panels[(g.dataset, g.depth, g.settings)].append(g)
    written = []
    for (dataset, depth, settings), members in panels.items():
        fig = tradeoff_figure(f"{dataset}, depth {depth}{', ' + settings if settings else ''}", members)
        if fig is None:
            continue
        slug = "" if len(panels) <= 1 or not settings else "_" + "".join(
            ch if ch.isalnum() or ch in ".=-" else "_" for ch in settings)[:80]
        path = out / f"tradeoff_{dataset}_depth{depth}{slug}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
