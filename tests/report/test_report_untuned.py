"""A verdict of runs made without tuning says so; a tuned confirmation's (tuned.yaml beside each run) does not."""
import yaml

from src.report.questions import UNTUNED
from src.report.tables import report
from helpers import write_run

# seed -> test error %: HXE far worse than the baseline on every seed (a "worse" verdict)
ERRORS = {"baseline": [1.0, 1.2, 0.9], "hxe": [8.6, 8.4, 8.9]}


def _sweep(path, tuned: bool):
    for method, errors in ERRORS.items():
        case = "baseline" if method == "baseline" else "case1"
        for seed, error in enumerate(errors):
            run = write_run(path, f"arm={method},seed={seed}", dataset="digits", method="hal" if method == "baseline"
                            else method, case=case, position=3, seed=seed, test_error=error)
            if tuned:   # as src.tuning.confirm writes it
                (run / "tuned.yaml").write_text(yaml.safe_dump({"arm": method, "trial": 3, "optimizer.lr": 0.4}))
    return report([path], path)


def _help_notes(md: str) -> list[str]:
    """The footnote lines of "Does it help?"."""
    section = md.split("## Does it help?")[1].split("\n## ")[0]
    return [line for line in section.splitlines() if line.startswith("- ")]


def test_an_untuned_sweeps_verdict_row_carries_the_footnote_in_table_md_and_report_html(tmp_path):
    result = _sweep(tmp_path / "s", tuned=False)
    hxe = next(r for r in result["rows"] if r["method"] == "hxe")
    assert hxe["verdict"] == "worse" and hxe["tuned_runs"] == 0
    notes = _help_notes(result["markdown"])
    assert [n for n in notes if UNTUNED in n] == [n for n in notes if n.startswith("- digits 10 hxe case1: Δ p=")]
    assert len(notes) == 1 and notes[0].endswith("; " + UNTUNED)   # the baseline row has no verdict, no note
    html = (tmp_path / "s" / "report.html").read_text()
    help_section = html.split('id="help"')[1].split("</section>")[0]
    assert "✗ worse" in help_section and f"hxe case1: Δ p=" in help_section and UNTUNED in help_section


def test_a_tuned_confirmations_verdict_row_does_not(tmp_path):
    result = _sweep(tmp_path / "s", tuned=True)
    hxe = next(r for r in result["rows"] if r["method"] == "hxe")
    assert hxe["verdict"] == "worse" and hxe["tuned_runs"] == 3
    notes = _help_notes(result["markdown"])
    assert len(notes) == 1 and notes[0].startswith("- digits 10 hxe case1: Δ p=")   # the p-values stay
    assert UNTUNED not in result["markdown"] and UNTUNED not in (tmp_path / "s" / "report.html").read_text()
