"""report.html of a methods_digits-sized sweep of hand-made runs, rendered in headless Chromium: every figure
loaded, every table there with its header, nothing asked of the network. Skips where Chromium is absent
(``make test-report-page`` installs it and runs this file)."""
import contextlib
import io
import re
import struct
from pathlib import Path

import pytest

import chromium
from report_sweeps import methods_digits_sweep
from src.report.tables import main
from src.report.page import FIGURES

needs_chromium = pytest.mark.skipif(chromium.executable() is None,
                                    reason="Chromium is absent: `make test-report-page` installs it (apt) and runs this")


def _report(sweep: Path) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([str(sweep)]) == 0
    return {"md": (sweep / "table.md").read_text(), "html": (sweep / "report.html").read_text(),
            "pngs": sorted(sweep.glob("*.png"))}


def _markdown_tables(md: str) -> list[tuple[str, list[str], int]]:
    """(heading, header cells, number of rows) of every table of table.md, in order."""
    found = []
    for block in re.split(r"^## ", md, flags=re.M)[1:]:
        lines = block.splitlines()
        table = [line for line in lines if line.startswith("|")]
        if table:
            found.append((lines[0], [c.strip() for c in table[0].strip("|").split(" | ")], len(table) - 2))
    return found


def _png_width(path: Path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]  # the IHDR chunk: width, then height


def check_static(report: dict) -> None:
    """What the HTML text alone shows: no script, no stylesheet or image from elsewhere, every PNG inlined."""
    page = report["html"]
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"url\(", page)
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(report["pngs"]) and all(s.startswith("data:image/png;base64,") for s in sources)


def check_rendered(report: dict, rendered: dict) -> None:
    images, tables = rendered["images"], rendered["tables"]
    # every figure loaded, at the size of its PNG, under the question it belongs to
    assert len(images) == len(report["pngs"])
    widths = {p.stem: _png_width(p) for p in report["pngs"]}
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["scheme"] == "data"
        assert image["width"] == widths[image["alt"]]
        kind = next(k for k in sorted(FIGURES, key=len, reverse=True) if image["alt"].startswith(k + "_"))
        assert image["section"] == FIGURES[kind], image["alt"]
    # every table of table.md is on the page, with the same header and rows; headers stay on screen
    expected = _markdown_tables(report["md"])
    assert [(t["question"], t["header"], t["rows"]) for t in tables] == expected
    assert all(t["sticky"] == "sticky" for t in tables)
    # nothing but the page itself and its inlined images was asked for
    assert rendered["scripts"] == 0
    others = [u for u in rendered["requests"] if not u.startswith("data:")]
    assert len(others) == 1 and others[0].startswith("file://") and others[0].endswith("/report.html"), others


def test_a_small_sweeps_page_is_self_contained(tmp_path):
    sweep = methods_digits_sweep(tmp_path / "methods_digits", arms={"baseline", "hal_case1", "dks", "hal_random_case1"},
                                 seeds=range(3), curves=False)
    report = _report(sweep)
    check_static(report)
    assert {p.name.split("_digits")[0] for p in report["pngs"]} == {"deltas", "tradeoff"}
    questions = [q for q, _, _ in _markdown_tables(report["md"])]
    assert questions == ["Does it help?", "Without the hint?", "How bad are the mistakes?",
                         "How bad are the mistakes? (continued, 2)", "At what cost?", "Does the tree's meaning matter?"]
    assert ("command <code>python -m src.train -m experiment=methods_digits threads=1</code>; commit 0123456789; "
            "machine vm: AMD EPYC, 2 cores (1 threads); seeds 0 1 2; 12 of 14 runs counted.") in report["html"]
    assert "arm=proxydr,seed=5</code> (failed): DivergenceError" in report["html"]
    if chromium.executable() is not None:
        check_rendered(report, chromium.render(sweep / "report.html"))


@needs_chromium
@pytest.mark.slow
def test_a_methods_digits_sized_sweeps_page_renders_every_figure_and_table_offline(tmp_path):
    sweep = methods_digits_sweep(tmp_path / "methods_digits")  # 13 arms x 5 seeds, curves, aux scores, probes
    report = _report(sweep)
    check_static(report)
    assert {p.name.split("_digits")[0] for p in report["pngs"]} == set(FIGURES)
    check_rendered(report, chromium.render(sweep / "report.html"))
    for line in report["md"].splitlines():
        assert not line.startswith("|") or line.count(" | ") + 1 <= 10, line


def test_a_confirmations_grey_box_shows_its_own_command(tmp_path):
    """A confirmation (``src.tune ... tune.confirm=true``) is no Hydra multirun: it records its command in
    ``command.txt``, and the grey box shows it instead of "not recorded"."""
    import html

    from src.report.page import COMMAND_FILE, sweep_lines
    from src.report.runs import load_runs

    sweep = methods_digits_sweep(tmp_path / "confirm", arms={"baseline", "hal_case1"}, seeds=range(2), curves=False)
    (sweep / "multirun.yaml").unlink()
    command = "python -m src.tune experiment=tune_digits 'tune.dir=/a b' tune.confirm=true"
    (sweep / COMMAND_FILE).write_text(command + "\n")
    runs = load_runs([sweep])
    assert f"command <code>{html.escape(command)}</code>;" in "".join(sweep_lines([sweep], runs))
