"""What tests/test_docs.py reads in README.md and docs/*.md: relative links with GitHub's heading anchors, and
the shell lines of fenced code blocks that run ``python -m src.…`` or ``make``; and how a documented
``python -m src.train`` line composes (its first job, for a multirun) without training."""
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from helpers import CONF

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {"gpu", "download", "slurm"}  # what a marked line needs that this CPU machine lacks
_MARKER = re.compile(r"#\s*needs:\s*([a-z]+(?:\s*,\s*[a-z]+)*)")
_PYTHON = {"python", "python3", ".venv/bin/python", ".venv/bin/python3"}


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# --- links --------------------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: formatting gone, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _outside_fences(path: Path):
    """(line number, text) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None:
            fence = None if stripped.startswith(fence) else fence
        else:
            yield number, line


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    for _, line in _outside_fences(path):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = github_anchor(match.group(1))
            seen[slug] = seen.get(slug, -1) + 1
    out = set()
    for slug, repeats in seen.items():
        out |= {slug} | {f"{slug}-{i}" for i in range(1, repeats + 1)}
    return out


def broken_links(path: Path) -> list[str]:
    """``file:line: target (why)`` for each relative link (or image) whose file or #anchor does not exist."""
    lines = dict(_outside_fences(path))
    prose = "\n".join(lines.get(n, "") for n in range(1, max(lines, default=0) + 1))  # fenced lines blank
    prose = re.sub(r"`[^`\n]*`", "code", prose)  # a link inside inline code is no link
    broken = []
    for match in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):  # text may span lines
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        where = (path.parent / file_part).resolve() if file_part else path
        why = None
        if not where.exists():
            why = "no such file"
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            why = f"no heading with anchor #{anchor} in {where.name}"
        if why:
            broken.append(f"{path.name}:{prose.count(chr(10), 0, match.start()) + 1}: {target} ({why})")
    return broken


# --- commands -----------------------------------------------------------------------------------------

@dataclass
class DocCommand:
    file: str            # relative to the repo root
    line: int            # where the command starts
    text: str            # as written, continuation lines joined
    program: str         # "make" or the module: "src.train", "src.report", ...
    args: list[str]      # shell words after the module (or after make)
    needs: tuple[str, ...] = ()  # from a `# needs: gpu, download` marker

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _fenced_lines(path: Path):
    """(line number, logical line) of every fenced code block, lines ending in a backslash joined."""
    fence, pending, start = None, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith(("```", "~~~")):
                fence = stripped[:3]
            continue
        if stripped.startswith(fence) and not pending:
            fence = None
            continue
        start = start if pending else number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped
        pending = ""


def parse_command(text: str) -> Optional[tuple[str, list[str], tuple[str, ...]]]:
    """(program, args, needs) of one shell command, or None when it runs neither ``-m src.…`` nor make."""
    marker = _MARKER.search(text)
    needs = tuple(n.strip() for n in marker.group(1).split(",")) if marker else ()
    try:
        words = shlex.split(text.removeprefix("$ "), comments=True)
    except ValueError:  # output in a code block ("... a job's metrics.json"): not a command, unless it runs one
        if re.search(r"(^|\s)(make|\S*python\S*\s+-m\s+src\.)", text):
            raise
        return None
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # OMP_NUM_THREADS=1 python ...
        words.pop(0)
    if words[:1] == ["make"]:
        return "make", words[1:], needs
    if len(words) >= 3 and words[0] in _PYTHON and words[1] == "-m" and words[2].startswith("src."):
        return words[2], words[3:], needs
    return None


def collect(paths=None, root: Path = ROOT) -> list[DocCommand]:
    commands = []
    for path in paths or doc_files(root):
        for number, line in _fenced_lines(path):
            for part in re.split(r"\s(?:&&|;)\s", line):
                parsed = parse_command(part)
                if parsed:
                    commands.append(DocCommand(str(path.relative_to(root)), number, part.strip(), *parsed))
    return commands


# --- composing src.train lines ------------------------------------------------------------------------

def train_overrides(args: list[str]) -> tuple[list[str], bool]:
    """(overrides, multirun) of ``python -m src.train ARGS``; Hydra's own flags are understood, not composed."""
    overrides, multirun, words = [], False, iter(args)
    for word in words:
        if word in ("-m", "--multirun"):
            multirun = True
        elif word in ("--cfg", "-c", "--package", "-p"):
            next(words, None)
        elif word in ("--resolve", "--info", "-i"):
            continue
        elif word.startswith("-"):
            raise ValueError(f"{word}: not a flag of python -m src.train this test knows")
        else:
            overrides.append(word)
    return overrides, multirun


def _is_hydra(override) -> bool:
    return re.split(r"[./]", override.key_or_group)[0] == "hydra"


def compose_train(args: list[str]) -> DictConfig:
    """The config ``python -m src.train ARGS`` runs (with ``--cfg job``), hydra/ overrides applied: for a
    multirun its first job, as Hydra's basic sweeper orders the preset's ``hydra.sweeper.params`` and the
    command line (a key given on the command line replaces the preset's list)."""
    overrides, multirun = train_overrides(args)
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    hydra_args = [o.input_line for o in parsed if _is_hydra(o)]
    task = [o.input_line for o in parsed if not _is_hydra(o)]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        if multirun:
            fixed = [o.input_line for o in parsed if not _is_hydra(o) and not o.is_sweep_override()]
            master = compose(config_name="config", overrides=hydra_args + fixed, return_hydra_config=True)
            params = master.hydra.sweeper.params or {}
            sweep = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + task)
            task = BasicSweeper.split_arguments(sweep, None)[0][0]
        cfg = compose(config_name="config", overrides=hydra_args + task)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    return cfg
