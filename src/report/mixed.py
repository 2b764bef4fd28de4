"""A folder that holds runs of different sweep commands (issue 36 §2).

Every ad hoc sweep gets its own folder (``src/run/sweep_dir.py``), but a folder named by hand
(``hydra.sweep.dir=...``), a preset's fixed folder, or ``outputs/sweeps/multirun`` from before can still hold the
jobs of two commands: the report would then count both as one experiment and Holm-correct across both. The jobs of
one command override the same keys (the swept ones and the fixed ones); a job overriding other keys
(``optimizer.lr=0.1`` added, ``trainer.max_epochs=1`` on a preset) comes from another command. Keys that only say
how or where to run (the run's ``exclude_keys``) are left out. Two commands overriding the same keys with other
values are not told apart here; their runs still fall into separate groups (``src.report.settings``).
"""
from collections import defaultdict
from pathlib import Path

import yaml

from src.report.runs import ReportError, Run


def override_keys(run: Run) -> frozenset:
    """The keys the run's command line overrode (``.hydra/overrides.yaml``), run-only keys left out."""
    path = run.dir / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text()) if path.exists() else None
    except (OSError, yaml.YAMLError):
        overrides = None
    keys = {str(o).split("=", 1)[0].lstrip("+~") for o in overrides or ()}
    return frozenset(keys - set(run.run_only) - {"experiment"})


def mixed_folders(runs: list[Run]) -> dict[Path, list[frozenset]]:
    """{folder: the distinct override key sets of its runs} for each folder whose runs come from more than one
    sweep command; runs without ``.hydra/`` (written by hand, or by another tool) are left out."""
    by_folder: dict[Path, set] = defaultdict(set)
    for run in runs:
        if (run.dir / ".hydra" / "overrides.yaml").exists():
            by_folder[run.dir.parent].add(override_keys(run))
    return {folder: sorted(keys, key=sorted) for folder, keys in by_folder.items() if len(keys) > 1}


def mixed_notes(runs: list[Run]) -> list[str]:
    """One warning line per mixed folder, for table.md's notes and the page."""
    lines = []
    for folder, key_sets in mixed_folders(runs).items():
        commands = " | ".join(", ".join(sorted(keys)) or "(none)" for keys in key_sets)
        lines.append(f"⚠ mixed sweep: `{folder}` holds runs of {len(key_sets)} different sweep commands (keys "
                     f"overridden: {commands}); their p-values are Holm-corrected together. Give each command its "
                     f"own folder (an ad hoc `-m` sweep gets one by default), or report them apart; --strict refuses this.")
    return lines


def refuse_mixed_sweeps(runs: list[Run]) -> None:
    """``--strict``: a folder of mixed sweep commands is an error, one line."""
    mixed = mixed_folders(runs)
    if mixed:
        folder, key_sets = next(iter(mixed.items()))
        raise ReportError(f"--strict: {folder} holds runs of {len(key_sets)} different sweep commands (keys "
                          f"overridden: {' | '.join(', '.join(sorted(k)) or '(none)' for k in key_sets)})")
