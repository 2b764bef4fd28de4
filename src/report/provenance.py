"""Mixed provenance: a comparison row whose runs did not all run the same code in the same numerics.

A row's Δ compares its runs with the baseline's. Suppose those runs (the baseline's and the row's, every seed)
differ in commit, in uncommitted patch, or in what changes floats for the same seed: torch, CUDA, cuDNN,
numpy, the CPU model at its thread count, the GPU (the fields ``src.run.provenance`` records). Then the Δ
mixes a code change or an environment change into the method's effect. Such a row gets ``mixed provenance``
in its flags, one footnote line per set of runs that ran alike (what ran under what), and ``--strict``
refuses the report. A field a record lacks (written before it was recorded) counts as "not recorded", which
differs from any recorded value: nothing says that those runs ran alike.
"""
from typing import Optional

from src.report.rows import baseline_of, baselines
from src.report.runs import Group, Run, natural

FLAG = "mixed provenance"
COLUMN = "ran_under"  # table.csv's column of the footnote's lines
SEPARATOR = " | "  # between them there


def _versions(record: dict) -> dict:
    return record["versions"] if isinstance(record.get("versions"), dict) else {}


def _commit(record: dict) -> Optional[str]:
    commit = record.get("git_commit")
    if commit in (None, "unknown"):  # "unknown": what records said before a missing git was null
        return None
    patch = record.get("code_patch")
    if isinstance(patch, dict) and patch.get("sha256"):
        return f"{str(commit)[:10]} + patch {str(patch['sha256'])[:8]}"
    return str(commit)[:10] + (" + uncommitted edits" if record.get("dirty") else "")


def _cpu(record: dict) -> Optional[str]:
    cpu = record.get("cpu")
    return None if cpu is None else f"{cpu} × {record.get('threads', '?')} threads"


# name shown -> how it is read from a record
FIELDS = {
    "commit": _commit,
    "torch": lambda r: _versions(r).get("torch"),
    "CUDA": lambda r: _versions(r).get("cuda"),
    "cuDNN": lambda r: _versions(r).get("cudnn"),
    "numpy": lambda r: _versions(r).get("numpy"),
    "CPU": _cpu,
    "GPU": lambda r: r.get("gpu"),
}


NOT_RECORDED = "not recorded"


def _recorded(record: dict, name: str) -> bool:
    """Whether the record has the field at all (null is recorded: no CUDA, no git; absent is not)."""
    if name == "commit":
        return "git_commit" in record
    if name in ("CPU", "GPU"):
        return name.lower() in record
    return "versions" in record


def key(run: Run) -> tuple:
    """What the run ran under, field by field of ``FIELDS``: a value, None (null), or ``NOT_RECORDED``."""
    return tuple(read(run.record) if _recorded(run.record, name) else NOT_RECORDED for name, read in FIELDS.items())


def lines(members: list[tuple[Group, Run]]) -> list[str]:
    """One line per set of runs with the same provenance: ``baseline seeds 0 1, case1 seeds 0 1: commit
    0123456789``, naming only the fields in which the sets differ; [] when they all ran alike."""
    sets: dict[tuple, list[tuple[Group, Run]]] = {}
    for group, run in members:
        sets.setdefault(key(run), []).append((group, run))
    if len(sets) < 2:
        return []
    differing = [i for i, _ in enumerate(FIELDS) if len({k[i] for k in sets}) > 1]
    names = list(FIELDS)
    out = []
    for k, runs in sets.items():
        seeds: dict[str, list] = {}
        for group, run in runs:
            seeds.setdefault(group.label, []).append(run.seed)
        who = ", ".join(f"{label} seed{'s' if len(s) > 1 else ''} {' '.join(str(x) for x in sorted(s, key=natural))}"
                        for label, s in seeds.items())
        what = ", ".join(f"{names[i]} {'none' if k[i] is None else k[i]}" for i in differing)
        out.append(f"{who}: {what}")
    return out


def add_provenance(groups: list[Group], rows: list[dict]) -> None:
    """``COLUMN`` in every row (``table_rows``' rows, one per group, in order): the footnote's lines joined by
    ``SEPARATOR`` when the row's runs and its baseline's differ in provenance, else empty; ``FLAG`` in its flags."""
    found = baselines(groups)
    for g, row in zip(groups, rows):
        base = baseline_of(g, found)
        members = [(g, r) for r in g.finished]
        if base is not None and base is not g:
            members = [(base, r) for r in base.finished] + members
        mixed = lines(members)
        row[COLUMN] = SEPARATOR.join(mixed)
        if mixed:
            row["flags"] = "; ".join(f for f in (row["flags"], FLAG) if f)


def footnote(r: dict) -> str:
    """The row's provenance footnote: a lead-in, then one ``\\n  - `` line per set of runs (a nested list in
    Markdown; ``src.report.page`` renders it as one in HTML)."""
    if not r.get(COLUMN):
        return ""
    return (f"{FLAG}, what ran under what:" +
            "".join(f"\n  - {line}" for line in r[COLUMN].split(SEPARATOR)))


def refuse_mixed_provenance(rows: list[dict]) -> Optional[str]:
    """``--strict``: the one-line reason to refuse the report, or None when no row mixes provenance."""
    mixed = [r for r in rows if r.get(COLUMN)]
    if not mixed:
        return None
    names = ", ".join(f"{r['dataset']} {r['depth']} {r['method']} {r['case']}" for r in mixed)
    return (f"--strict: {len(mixed)} row{'s' if len(mixed) > 1 else ''} mix{'' if len(mixed) > 1 else 'es'} "
            f"provenance (commit, patch, torch/CUDA/cuDNN/numpy, CPU or GPU) between its runs: {names}; "
            "rerun them under one code and environment, or drop --strict to see the footnotes")
