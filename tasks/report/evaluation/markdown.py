"""The evaluation report as Markdown (``report.md``): readable as plain text in a terminal, and
rendered on GitHub or as a Prefect markdown artifact.

Tables are GitHub pipe tables padded to aligned columns, so they read the same raw or rendered.
Strings from the report (vector keys, query ids, paths, run ids) are code spans: shown as typed
and never taken as Markdown or HTML; prose from the report (qrels error messages) is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.report.evaluation.sections import evaluation_page
from tasks.report.evaluation.tables import Cell, Row, Section, Table

# Markdown's inline markup, and a raw "<" that a renderer could take as HTML. An underscore
# inside a word ("tie_aware") is not markup, so it is left alone to stay readable.
_MARKUP = re.compile(r"[\\`*\[\]<>|&~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def evaluation_markdown(report: Mapping[str, Any]) -> str:
    """The report as one Markdown document: run facts, gates, headline figures, index recall
    (overall, per modality, filtered), latency, worst queries, labeled metrics, qrels errors,
    the dimension trade-off and the trend. A section the report lacks is one line saying so."""
    page = evaluation_page(report)
    lines = [f"# Evaluation report: {_code(page.run_id)}", ""]
    lines += [f"- {_inline(fact)}" for fact in page.facts]
    for section in page.sections:
        lines += ["", *_section(section)]
    return "\n".join(lines) + "\n"


def _section(section: Section) -> list[str]:
    lines = [f"## {section.title}", ""]
    for position, note in enumerate(section.notes):
        if position == 0 and section.verdict == "fail":
            lines += [f"> **FAILED:** {_inline(note)}", ""]
        elif position == 0 and section.verdict == "pass":
            lines += [f"**PASSED:** {_inline(note)}", ""]
        else:
            lines += [_inline(note), ""]
    for figure in section.figures:
        lines += [f"**{_escape(figure.table.title)}**", "", *_table(figure.table), ""]
    return lines[:-1]


def _table(table: Table) -> list[str]:
    """An aligned pipe table; number columns are right-aligned."""
    header = [_escape(column) for column in table.columns]
    body = [_row(row, len(header)) for row in table.rows]
    numeric = [
        bool(table.rows) and all(_is_number(row.cells, c) for row in table.rows)
        for c in range(len(header))
    ]
    widths = [
        max([3, len(header[c]), *(len(cells[c]) for cells in body)]) for c in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[c]) if numeric[c] else cell.ljust(widths[c])
            for c, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (width + 1) + ":" if right else "-" * (width + 2)
        for width, right in zip(widths, numeric, strict=True)
    )
    return [line(header), f"|{rule}|", *(line(cells) for cells in body)]


def _row(row: Row, width: int) -> list[str]:
    cells = [_cell(cell, in_table=True) for cell in row.cells[:width]]
    if row.failed:
        cells = [f"**{cell}**" if cell else cell for cell in cells]
    return cells + [""] * (width - len(cells))


def _is_number(cells: Sequence[Cell], column: int) -> bool:
    return column >= len(cells) or cells[column].kind == "number"


def _inline(note: Sequence[Cell]) -> str:
    return "".join(_cell(cell, in_table=False) for cell in note)


def _cell(cell: Cell, *, in_table: bool) -> str:
    if cell.kind == "key":
        return _code(cell.text, in_table=in_table)
    if cell.kind == "number":
        return cell.text
    return _escape(cell.text)


def _escape(text: str) -> str:
    """Prose with every character Markdown could read as markup backslash-escaped."""
    return _MARKUP.sub(lambda found: "\\" + found.group(), text)


def _code(text: str, *, in_table: bool = False) -> str:
    """A code span that shows ``text`` exactly, whatever backticks it holds; in a table a pipe
    is escaped (GitHub splits cells on pipes before it reads code spans)."""
    if not text:
        return ""
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"
