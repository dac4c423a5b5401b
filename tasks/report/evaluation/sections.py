"""The evaluation report of a run, read from its ``report.json`` dict into an ``EvaluationPage``:
the gates and headline figures first, then index recall, labeled queries, the dimension trade-off
and the trend over earlier reports of the same store."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tasks.report.evaluation.labeled_sections import labeled_section
from tasks.report.evaluation.plots import LineChart, Plot, Series
from tasks.report.evaluation.recall_sections import index_recall_sections
from tasks.report.evaluation.tables import (
    MISSING,
    Cell,
    EvaluationPage,
    Figure,
    Note,
    Row,
    Section,
    Table,
    at_k,
    clean,
    count,
    figure,
    fraction,
    items,
    key,
    ks_of,
    mapping,
    metric_order,
    number,
    text,
)


def evaluation_page(report: Mapping[str, Any]) -> EvaluationPage:
    """Every section of the report, in reading order; each missing one is a short note."""
    return EvaluationPage(
        clean(report.get("run_id", "")),
        _facts(report),
        (
            _gates(report.get("gates")),
            _headline(mapping(report.get("headline"))),
            *index_recall_sections(report),
            labeled_section(mapping(report.get("labeled"))),
            _dimensions(mapping(report.get("dimensions"))),
            _trend(report),
        ),
    )


def _facts(report: Mapping[str, Any]) -> tuple[Note, ...]:
    index = mapping(report.get("index"))
    name = f"{index.get('vector_bucket', MISSING)}/{index.get('index', MISSING)}"
    return (
        (text("Created: "), text(report.get("created_at", MISSING))),
        (text("Store: "), key(report.get("store", MISSING))),
        (
            text("Index: "),
            key(name),
            text(
                f" — {count(index.get('vectors')).text} vectors of "
                f"{count(index.get('dimension')).text} dimensions, "
                f"{clean(index.get('metric', MISSING))} distance, "
                f"{clean(index.get('mode', MISSING))} mode."
            ),
        ),
    )


def _gates(gates: object) -> Section:
    found = items(gates)
    if not found:
        note = (text("No gates were set for this evaluation."),)
        return Section("gates", "Gates", notes=(note,))
    rows: list[Row] = []
    for gate in found:
        name = clean(gate.get("metric", ""))
        passed = gate.get("passed") is True
        rows.append(
            Row(
                (
                    key(name),
                    figure(name, gate.get("value")),
                    figure(name, gate.get("threshold")),
                    text("pass" if passed else "FAIL"),
                ),
                failed=not passed,
            )
        )
    failed = [row.cells[0].text for row in rows if row.failed]
    if failed:
        verdict = (
            text(f"{len(failed)} of {len(rows)} gates failed: "),
            *_joined([key(name) for name in failed]),
            text("."),
        )
    else:
        verdict = (text(f"All {len(rows)} gates passed."),)
    table = Table("Gates", ("metric", "value", "threshold", "result"), tuple(rows))
    return Section(
        "gates", "Gates", (verdict,), (Figure(table),), verdict="fail" if failed else "pass"
    )


def _joined(cells: list[Cell]) -> list[Cell]:
    joined: list[Cell] = []
    for position, cell in enumerate(cells):
        joined += [text(", "), cell] if position else [cell]
    return joined


def _headline(headline: Mapping[str, Any]) -> Section:
    if not headline:
        return Section("headline", "Headline", notes=((text("No headline figures."),),))
    rows = tuple(Row((key(name), figure(str(name), value))) for name, value in headline.items())
    table = Table("Headline figures", ("figure", "value"), rows)
    return Section("headline", "Headline", figures=(Figure(table),))


def _dimensions(dimensions: Mapping[str, Any]) -> Section:
    rows_found = items(dimensions.get("rows"))
    if not rows_found:
        note = (text("This report has no dimension trade-off (no truncated dimensions tried)."),)
        return Section("dimensions", "Dimension trade-off", notes=(note,))
    rows_found.sort(key=lambda row: number(row.get("dimension")) or 0.0)
    embedded = number(dimensions.get("embedded_dimension"))
    ks = ks_of({}, *(row.get("recall") for row in rows_found))
    labeled = metric_order(str(n) for row in rows_found for n in mapping(row.get("labeled")))
    table_rows: list[Row] = []
    for row in rows_found:
        dimension = number(row.get("dimension"))
        label = count(dimension).text + (" (embedded)" if dimension == embedded else "")
        table_rows.append(
            Row(
                (
                    text(label),
                    *(fraction(at_k(row.get("recall"), k)) for k in ks),
                    *(fraction(mapping(row.get("labeled")).get(n)) for n in labeled),
                )
            )
        )
    columns = ("dimension", *(f"recall@{k}" for k in ks), *(f"labeled {n}" for n in labeled))
    table = Table("Recall against embedding dimension", columns, tuple(table_rows))
    dims = [number(row.get("dimension")) or 1.0 for row in rows_found]
    series = [
        Series(f"recall@{k}", tuple(at_k(row.get("recall"), k) for row in rows_found), color)
        for color, k in enumerate(ks)
    ] + [
        Series(
            f"labeled {n}",
            tuple(number(mapping(row.get("labeled")).get(n)) for row in rows_found),
            len(ks) + color,
            dashed=True,
        )
        for color, n in enumerate(labeled)
    ]
    plot = LineChart(
        "plot-dimensions",
        "Recall against embedding dimension",
        "dimension (log scale)",
        "score",
        tuple(math.log2(d) if d > 0 else 0.0 for d in dims),
        tuple(f"{d:.0f}" for d in dims),
        tuple(series),
        (0.0, 1.0),
    )
    note = (
        text(
            "The same embeddings cut to fewer dimensions and evaluated again: what a smaller, "
            "cheaper index would keep. The dimension the index holds is marked (embedded)."
        ),
    )
    return Section("dimensions", "Dimension trade-off", (note,), (Figure(table, (plot,)),))


def _trend(report: Mapping[str, Any]) -> Section:
    runs = items(report.get("trend"))
    current = {field: report.get(field) for field in ("run_id", "created_at", "headline")}
    if not runs or runs[-1].get("run_id") != current["run_id"]:
        runs = [*runs, current]
    names = list(
        dict.fromkeys(str(n) for run in reversed(runs) for n in mapping(run.get("headline")))
    )
    rows = tuple(
        Row(
            (
                count(position + 1),
                key(run.get("run_id", "")),
                text(run.get("created_at", "")),
                *(figure(n, mapping(run.get("headline")).get(n)) for n in names),
            )
        )
        for position, run in enumerate(runs)
    )
    table = Table("Headline figures per report", ("#", "run", "created", *names), rows)
    fractions = [n for n in names if not n.endswith("_ms")]
    latencies = [n for n in names if n.endswith("_ms")]
    plots: list[Plot] = []
    if fractions:
        title = "Headline figures per report"
        plots.append(_trend_chart("plot-trend", title, "score", fractions, runs, (0.0, 1.0)))
    if latencies:
        title = "Query latency per report"
        plots.append(_trend_chart("plot-trend-latency", title, "ms", latencies, runs, None))
    earlier = len(runs) - 1
    note = (
        text(
            f"{earlier} earlier report{'s' if earlier != 1 else ''} of this store, oldest first, "
            "then this one."
            if earlier
            else "No earlier report of this store: this run is the only point."
        ),
    )
    return Section("trend", "Trend", (note,), (Figure(table, tuple(plots)),))


def _trend_chart(
    plot_id: str,
    title: str,
    y_label: str,
    names: list[str],
    runs: list[Mapping[str, Any]],
    limits: tuple[float, float] | None,
) -> LineChart:
    """One line per headline figure over the reports, numbered from the oldest; with many
    reports only every few are labelled on the axis."""
    step = math.ceil(len(runs) / 12)
    labels = tuple(
        f"#{p + 1}" if p % step == 0 or p == len(runs) - 1 else "" for p in range(len(runs))
    )
    series = tuple(
        Series(n, tuple(number(mapping(run.get("headline")).get(n)) for run in runs), color)
        for color, n in enumerate(names)
    )
    x = tuple(float(position) for position in range(len(runs)))
    return LineChart(plot_id, title, "report", y_label, x, labels, series, limits)
