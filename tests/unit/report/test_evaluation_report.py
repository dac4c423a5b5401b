"""The evaluation report written as Markdown and as one self-contained HTML page with SVG plots."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from tasks.report.evaluation.html import evaluation_html
from tasks.report.evaluation.markdown import evaluation_markdown
from tasks.report.evaluation.plots import (
    BarChart,
    Histogram,
    LineChart,
    Marker,
    Series,
    grouped_bar_chart,
    histogram,
    line_chart,
)
from tests.unit.report.sample_reports import (
    FULL_PLOTS,
    HOSTILE,
    HOSTILE_ATTRIBUTE,
    MINIMAL_PLOTS,
    full_report,
    minimal_report,
)

SVG = re.compile(r"<svg\b.*?</svg>", re.DOTALL)
CODE_SPAN = re.compile(r"(`+).*?\1")
# Attributes through which HTML, SVG or CSS fetch something.
FETCHING = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data"}
CSS_FETCH = re.compile(r"url\(|@import", re.IGNORECASE)


class _Page(HTMLParser):
    """Every tag of a page, every attribute that could fetch something, and its CSS."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.fetching: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in FETCHING:
                self.fetching.append(value or "")
            if name == "style":
                self.styles.append(value or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def _parsed(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def external_references(page: str) -> list[str]:
    """What a page could fetch: any fetching attribute that is not a fragment (``#id``) or a
    ``data:`` URI, and any CSS ``url(…)`` or ``@import``."""
    parsed = _parsed(page)
    found = [v for v in parsed.fetching if not v.startswith("#") and not v.startswith("data:")]
    found += [css for css in parsed.styles if CSS_FETCH.search(css)]
    return found


def _plots(page: str) -> dict[str, ET.Element]:
    """Each ``<svg>`` fragment of the page, parsed as XML, by id."""
    plots = {}
    for fragment in SVG.findall(page):
        element = ET.fromstring(fragment)
        plots[element.attrib["id"]] = element
    return plots


def _texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter("text")]


@pytest.fixture(scope="module")
def full_html() -> str:
    return evaluation_html(full_report())


@pytest.fixture(scope="module")
def full_markdown() -> str:
    return evaluation_markdown(full_report())


def test_the_full_report_renders_every_section(full_html: str, full_markdown: str) -> None:
    for title in (
        "Gates",
        "Headline",
        "Index recall",
        "Query latency",
        "Worst queries",
        "Labeled queries",
        "Dimension trade-off",
        "Trend",
    ):
        assert f"## {title}\n" in full_markdown
        assert f"<h2>{title}</h2>" in full_html
    assert "**Qrels rows that could not be used**" in full_markdown
    assert "**Recall@k with a metadata filter**" in full_markdown
    assert "| 1024 (embedded) |" in full_markdown
    assert "<caption>Labeled metrics @10 per mode</caption>" in full_html


def test_markdown_shows_the_headline_figures(full_markdown: str) -> None:
    headline = full_markdown.split("## Headline", 1)[1].split("## ", 1)[0]
    for figure, value in (
        ("index_recall@10", "0.980"),
        ("tie_aware_recall@10", "0.990"),
        ("labeled_ndcg@10", "0.850"),
        ("labeled_recall@10", "0.900"),
        ("query_latency_p95_ms", "3.40 ms"),
    ):
        assert re.search(rf"\| `{re.escape(figure)}` +\| +{re.escape(value)} \|", headline)


def test_markdown_tables_are_aligned_for_a_terminal(full_markdown: str) -> None:
    table: list[str] = []
    for line in [*full_markdown.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            assert len({len(row) for row in table}) == 1, table
            assert re.fullmatch(r"\|(-+:?\|)+", table[1])
        table = []


def test_the_minimal_report_renders_with_a_note_for_each_missing_section() -> None:
    report = minimal_report()
    markdown, page = evaluation_markdown(report), evaluation_html(report)
    for note in (
        "No gates were set for this evaluation.",
        "This report lists no worst queries.",
        "This report has no labeled-query evaluation (no qrels were given).",
        "This report has no dimension trade-off (no truncated dimensions tried).",
        "No earlier report of this store: this run is the only point.",
    ):
        assert note in markdown
        assert html.escape(note) in page
    assert re.search(r"\| `index_recall@10` +\| +0\.970 \|", markdown)
    assert set(_plots(page)) == set(MINIMAL_PLOTS)


def test_a_report_with_nothing_but_its_identity_still_renders() -> None:
    report = {key: minimal_report()[key] for key in ("run_id", "created_at", "index")}
    report["headline"] = {}
    page = evaluation_html(report)
    assert "This report has no index recall evaluation." in page
    assert "This report has no index recall evaluation." in evaluation_markdown(report)
    assert set(_plots(page)) == set()


@pytest.mark.parametrize("report", [full_report(), minimal_report()], ids=["full", "minimal"])
def test_the_page_references_nothing_outside_itself(report: dict[str, Any]) -> None:
    page = evaluation_html(report)
    for needle in ("http://", "https://", "//cdn", "url(", "@import"):
        assert needle not in page
    assert external_references(page) == []
    tags = set(_parsed(page).tags)
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "base", "use"}


@pytest.mark.parametrize(
    "snippet",
    [
        '<img src="http://example.com/x.png">',
        '<link rel="stylesheet" href="https://cdn.example.com/a.css">',
        "<style>body { background: url(//cdn.example.com/bg.png) }</style>",
        "<p style=\"background-image: url('https://example.com/y.png')\">x</p>",
        '<svg><image href="https://example.com/z.svg"/></svg>',
    ],
)
def test_the_reference_check_catches_a_page_that_fetches(snippet: str) -> None:
    page = evaluation_html(minimal_report()).replace("</main>", f"{snippet}</main>")
    assert external_references(page)


def test_every_string_from_the_report_is_escaped(full_html: str) -> None:
    assert HOSTILE not in full_html
    assert HOSTILE_ATTRIBUTE not in full_html
    assert "<img" not in full_html
    assert html.escape(HOSTILE) in full_html
    assert html.escape(HOSTILE_ATTRIBUTE) in full_html
    tags = _parsed(full_html).tags
    assert "script" not in tags
    assert "img" not in tags
    # The hostile modality, query type and run id are labels in the plots too.
    labels = [text for plot in _plots(full_html).values() for text in _texts(plot)]
    assert any(HOSTILE in label for label in labels)


def test_markdown_shows_report_strings_as_code_or_escaped(full_markdown: str) -> None:
    outside_code = CODE_SPAN.sub("", full_markdown)
    assert re.search(r"(?<!\\)<", outside_code) is None
    assert f"`{HOSTILE}`" in full_markdown
    assert r"bad JSON near \<script\>alert(1)\</script\>" in full_markdown
    # A pipe in a key would split a table cell; a backtick would end a one-backtick code span.
    assert r"``text/b\|c`d``" in full_markdown


def test_each_plot_is_a_well_formed_svg_with_an_id_and_a_size(full_html: str) -> None:
    assert len(SVG.findall(full_html)) == len(FULL_PLOTS)
    plots = _plots(full_html)
    assert set(plots) == set(FULL_PLOTS)
    for plot_id, svg in plots.items():
        assert svg.tag == "svg"
        assert svg.attrib["class"] == "plot"
        width, height = int(svg.attrib["width"]), int(svg.attrib["height"])
        assert svg.attrib["viewBox"] == f"0 0 {width} {height}"
        assert svg.find("title") is not None, plot_id
        assert svg.find("g[@class='legend']") is not None, plot_id


def test_the_plots_draw_the_report_numbers(full_html: str) -> None:
    plots = _plots(full_html)
    curves = plots["plot-recall-curves"]
    assert len(curves.findall("polyline")) == 2 * 5  # plain and tie-aware, overall + 4 modalities
    assert {"1", "10", "100"} <= set(_texts(curves))
    latency = plots["plot-latency"]
    assert {"p50 1.2", "p95 3.4", "p99 5.6"} <= set(_texts(latency))
    # Several labeled modes: query types grouped, one bar per mode.
    by_type = plots["plot-labeled-query-types"]
    assert {"vector", "text", "hybrid", "text→text", "image→image"} <= set(_texts(by_type))
    # The background, then a bar per query type and mode: text modes ran no image query.
    assert len(by_type.findall("rect")) == 1 + 4 + 3 + 3
    assert {"256", "384", "1024"} <= set(_texts(plots["plot-dimensions"]))
    trend = plots["plot-trend"]
    assert {"#1", "#6"} <= set(_texts(trend))


def test_one_labeled_mode_plots_its_metrics_per_query_type() -> None:
    report = full_report()
    report["labeled"]["modes"] = {"vector": report["labeled"]["modes"]["vector"]}
    by_type = _plots(evaluation_html(report))["plot-labeled-query-types"]
    labels = set(_texts(by_type))
    assert {"recall@10", "ndcg@10", "mrr@10", "precision@10"} <= labels
    assert "hybrid" not in labels


def test_failed_gates_are_shown_first_in_red_with_value_and_threshold(
    full_html: str, full_markdown: str
) -> None:
    verdict = re.search(r'<p class="verdict fail">(.*?)</p>', full_html)
    assert verdict
    assert "2 of 3 gates failed" in verdict.group(1)
    assert full_html.index("verdict fail") < full_html.index('id="headline"')
    failed = re.findall(r'<tr class="failed">(.*?)</tr>', full_html)
    assert len(failed) == 2
    assert "labeled_ndcg@10" in failed[0]
    assert "0.850" in failed[0]
    assert "0.900" in failed[0]
    assert "FAIL" in failed[0]
    assert "3.40 ms" in failed[1]
    assert "3.00 ms" in failed[1]
    assert "> **FAILED:** 2 of 3 gates failed: `labeled_ndcg@10`, `query_latency_p95_ms`." in (
        full_markdown
    )
    assert re.search(r"\| \*\*`labeled_ndcg@10`\*\* +\| +\*\*0\.850\*\* \|", full_markdown)


def test_gates_that_all_pass_say_so() -> None:
    report = minimal_report()
    report["gates"] = [
        {"metric": "index_recall@10", "threshold": 0.9, "value": 0.97, "passed": True}
    ]
    assert '<p class="verdict pass">✓ All 1 gates passed.</p>' in evaluation_html(report)
    assert "**PASSED:** All 1 gates passed." in evaluation_markdown(report)


def test_the_trend_ends_with_this_run_once() -> None:
    report = full_report()
    markdown = evaluation_markdown(report)
    assert re.search(r"\| +6 \| `20261206t120000z-ab12` +\|", markdown.split("## Trend", 1)[1])
    report["trend"].append(
        {"run_id": report["run_id"], "created_at": report["created_at"], "headline": {}}
    )
    trend = evaluation_markdown(report).split("## Trend", 1)[1]
    assert trend.count("20261206t120000z-ab12") == 1
    assert len(_plots(evaluation_html(report))["plot-trend"].findall("polyline")) >= 1


def test_characters_xml_forbids_are_dropped_not_written() -> None:
    report = full_report()
    report["index_recall"]["by_modality"]["bad\x00\x1b\ud800name"] = report["index_recall"][
        "overall"
    ]
    page = evaluation_html(report)
    page.encode("utf-8")
    assert "badname" in page
    assert set(_plots(page)) == set(FULL_PLOTS)
    evaluation_markdown(report).encode("utf-8")


def test_the_charts_draw_edge_cases_as_well_formed_svg() -> None:
    charts = [
        line_chart(
            LineChart("one", "One point", "x", "y", (0.0,), ("#1",), (Series("a", (0.5,)),))
        ),
        line_chart(
            LineChart(
                "gaps",
                "Gaps",
                "x",
                "y",
                (1.0, 2.0, 3.0),
                ("1", "2", "3"),
                (Series("a", (None, 0.2, None)), Series("b", (None, None, None), dashed=True)),
                (0.0, 1.0),
            )
        ),
        grouped_bar_chart(BarChart("bars", "Bars", "y", ("g",), (Series("s", (None,)),))),
        grouped_bar_chart(BarChart("none", "No groups", "y", (), ())),
        histogram(Histogram("same", "Same", "ms", (2.0, 2.0, 2.0), (Marker("p50", 2.0),))),
        histogram(Histogram("empty", "Empty", "ms", ())),
    ]
    for chart in charts:
        svg = ET.fromstring(chart)
        assert svg.attrib["viewBox"].startswith("0 0 ")
    assert ET.fromstring(charts[0]).find("circle") is not None
