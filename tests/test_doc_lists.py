"""Issue 36 §8: the docs' lists of options are complete, and a preset's run count agrees with its timing."""
import re
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def options(group: str) -> set[str]:
    return {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}


def test_readme_lists_every_method():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `conf/method/`"))
    assert set(re.findall(r"`([a-z_]+)`", row.split("|")[2])) == options("method")


def test_configuration_lists_every_case_and_method():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for group in ("case", "method"):
        listed = re.search(rf"^- `{group}=([a-z0-9_|]+)`", text, flags=re.M).group(1).split("|")
        assert set(listed) == options(group), group


def test_methods_digits_run_count_and_timing_agree():
    text = (ROOT / "docs" / "experiments.md").read_text()
    params = OmegaConf.load(ROOT / "conf" / "preset_base" / "methods.yaml").hydra.sweeper.params
    runs = len(str(params.arm).split(",")) * 5
    assert str(params.seed) == "range(0,5)"
    assert re.search(rf"^\| `methods_digits` \|.*\| {runs}: {runs // 5} arms × seeds 0–4 \|", text, flags=re.M)
    timing = next(line for line in text.splitlines() if line.startswith("| `methods_digits` (run under"))
    counted = re.search(r"(\d+) runs", timing).group(1)
    assert int(counted) == runs or f"today's {runs // 5} arms ({runs} runs" in timing
