"""The labeled section with retrieval modes side by side: a table per cutoff, grouped bar plots,
why a mode did not run, the terminal's per-mode lines and each mode's TREC files."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tasks.report.evaluation.document import mode_lines, report_lines, write_report
from tasks.report.evaluation.html import evaluation_html
from tasks.report.evaluation.markdown import evaluation_markdown
from tasks.store import CheckpointStore
from tests.unit.report.sample_reports import full_report, minimal_report

SVG = re.compile(r"<svg\b.*?</svg>", re.DOTALL)
OFF = "searchable text is off for this index"


def _plot(page: str, plot_id: str) -> ET.Element:
    for fragment in SVG.findall(page):
        element = ET.fromstring(fragment)
        if element.attrib["id"] == plot_id:
            return element
    raise AssertionError(f"no plot {plot_id}")


def _bar_titles(plot: ET.Element) -> set[str]:
    return {t for rect in plot.findall("rect") if (t := rect.findtext("title")) is not None}


def _table(markdown: str, title: str) -> list[list[str]]:
    """The body rows of the Markdown table under ``**title**``, cells stripped."""
    block = markdown.split(f"**{title}**\n\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in block.splitlines()[2:]]
    return [[cell.strip() for cell in row] for row in rows]


def _vector_only(reason: str = OFF) -> dict[str, Any]:
    report = full_report()
    labeled = report["labeled"]
    labeled["modes"] = {"vector": labeled["modes"]["vector"]}
    labeled["modes_unavailable"] = {"text": reason, "hybrid": reason}
    labeled["common"] = None
    labeled["trec_files"] = {"vector": labeled["trec_files"]["vector"]}
    return report


def test_each_cutoff_has_a_table_of_every_mode_overall_on_common_queries_and_per_type() -> None:
    markdown = evaluation_markdown(full_report())

    for k in (1, 5, 10):
        assert f"**Labeled metrics @{k} per mode**" in markdown
    rows = _table(markdown, "Labeled metrics @10 per mode")
    header = markdown.split("**Labeled metrics @10 per mode**\n\n", 1)[1].splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "scope", "mode", "queries", "recall@10", "mrr@10", "ndcg@10", "precision@10",
    ]  # fmt: skip
    assert rows[:3] == [
        ["all queries", "`vector`", "12", "0.880", "0.840", "0.827", "0.229"],
        ["all queries", "`text`", "8", "0.680", "0.640", "0.627", "0.171"],
        ["all queries", "`hybrid`", "8", "0.930", "0.890", "0.877", "0.243"],
    ]
    assert [row[:3] for row in rows[3:6]] == [
        ["queries every mode ran", f"`{mode}`", "8"] for mode in ("vector", "text", "hybrid")
    ]
    assert rows[5][3:6] == ["0.940", "0.900", "0.887"]  # hybrid on the common queries
    image_rows = [row for row in rows if row[0] == "`image→image`"]
    assert [row[1] for row in image_rows] == ["`vector`"]  # text modes ran no image query
    assert len(rows) == 3 + 3 + 4 * 3 - 2


def test_the_html_plots_each_mode_as_a_bar_beside_the_reference_cutoff_table() -> None:
    page = evaluation_html(full_report())

    overall = _plot(page, "plot-labeled-overall")
    assert overall.findtext("title") == "Labeled metrics @10 per mode, queries every mode ran"
    bars = _bar_titles(overall)
    # Metric families grouped, one bar per mode, from the common queries' means.
    assert {"recall · hybrid: 0.94", "mrr · text: 0.65", "ndcg · vector: 0.847"} <= bars
    assert len(bars) == 4 * 3
    assert [t.text for t in overall.iter("text")][-3:] == ["vector", "text", "hybrid"]
    # Both plots sit beside the @10 table, none beside the others.
    figure = page.split("<caption>Labeled metrics @10 per mode</caption>")[0].rsplit(
        '<div class="figure">', 1
    )[1]
    assert 'id="plot-labeled-overall"' in figure
    assert 'id="plot-labeled-query-types"' in figure
    assert page.count('id="plot-labeled-overall"') == 1


def test_modes_that_did_not_run_are_named_with_why() -> None:
    report = _vector_only()
    markdown, page = evaluation_markdown(report), evaluation_html(report)

    assert f"Not run: `text` and `hybrid` — {OFF}." in markdown
    assert f"Not run: <code>text</code> and <code>hybrid</code> — {OFF}." in page
    assert "Retrieval modes: vector asks" in markdown
    rows = _table(markdown, "Labeled metrics @10 per mode")
    assert {row[1] for row in rows} == {"`vector`"}
    # One mode: the plot shows its metrics at each cutoff.
    labels = {t.text for t in _plot(page, "plot-labeled-overall").iter("text")}
    assert {"@1", "@5", "@10"} <= labels


def test_a_report_from_before_modes_still_renders_its_vector_figures() -> None:
    report = full_report()
    labeled = report["labeled"]
    for field in ("modes_unavailable", "common", "trec_files"):
        del labeled[field]
    labeled["modes"] = {
        "vector": {key: labeled["modes"]["vector"][key] for key in ("overall", "by_query_type")}
    }
    markdown = evaluation_markdown(report)

    assert "Retrieval modes" not in markdown
    assert "TREC files for trec_eval: vector: run `labeled.run`, qrels `labeled.qrels`." in markdown
    assert _table(markdown, "Labeled metrics @10 per mode")[0][:3] == [
        "all queries", "`vector`", "—",
    ]  # fmt: skip
    assert mode_lines(labeled) == []


def test_the_trec_note_names_each_modes_run_and_qrels() -> None:
    markdown = evaluation_markdown(full_report())

    assert (
        "TREC files for trec_eval: vector: run `labeled.run`, qrels `labeled.qrels`; text: run "
        "`labeled.text.run`, qrels `labeled.text.qrels`; hybrid: run `labeled.hybrid.run`, "
        "qrels `labeled.hybrid.qrels`."
    ) in markdown


def test_the_terminal_shows_a_line_per_mode_on_the_queries_every_mode_ran() -> None:
    lines = report_lines(full_report(), "/tmp/report.html")

    labeled = lines.index(next(line for line in lines if line.startswith("  labeled  ")))
    assert lines[labeled + 1 : labeled + 4] == [
        "  vector   recall@10 0.900, mrr@10 0.860, ndcg@10 0.847 (8 queries every mode ran)",
        "  text     recall@10 0.690, mrr@10 0.650, ndcg@10 0.637 (8 queries every mode ran)",
        "  hybrid   recall@10 0.940, mrr@10 0.900, ndcg@10 0.887 (8 queries every mode ran)",
    ]


def test_the_terminal_says_why_a_mode_did_not_run() -> None:
    lines = report_lines(_vector_only(), "/tmp/report.html")

    assert f"  text     not run: {OFF}" in lines
    assert f"  hybrid   not run: {OFF}" in lines
    assert "  vector   recall@10 0.880, mrr@10 0.840, ndcg@10 0.827 (12 queries)" in lines
    assert mode_lines({}) == []
    assert not any(line.startswith("  vector") for line in report_lines(minimal_report(), "x"))


def test_every_modes_trec_files_are_written_beside_the_report(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    report = full_report()
    files = {
        "labeled.text.run": "q1 Q0 text/a 1 1 text\n",
        "labeled.text.qrels": "q1 0 text/a 1\n",
    }

    write_report(store, report, "q1 Q0 text/b 1 1 vector\n", "q1 0 text/a 1\n", files)

    folder = tmp_path / "reports" / report["run_id"]
    assert (folder / "labeled.run").read_text() == "q1 Q0 text/b 1 1 vector\n"
    assert (folder / "labeled.qrels").read_text() == "q1 0 text/a 1\n"
    assert (folder / "labeled.text.run").read_text() == files["labeled.text.run"]
    assert (folder / "labeled.text.qrels").read_text() == files["labeled.text.qrels"]
