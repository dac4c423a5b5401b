"""The evaluation report as one self-contained HTML page (``report.html``).

Self-contained means the file alone is the whole report: CSS inline, plots as inline SVG drawn
by ``tasks.report.evaluation.plots``, no script, and no URL of any kind (no stylesheet, font or
image to fetch), so it opens offline, from an artifact store or an e-mail, and shows the same. Every
string taken from the report is HTML-escaped: vector keys and query texts are user data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.report.evaluation.plots import escape, render
from tasks.report.evaluation.sections import evaluation_page
from tasks.report.evaluation.tables import Cell, Figure, Note, Section, Table

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f5f6f8; color: #1c1e21;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 12px 20px 40px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 0 0 8px; }
header p { margin: 2px 0; color: #444; }
nav { margin: 10px 0 0; }
nav a { margin-right: 14px; color: #0b57a4; }
section { background: #fff; border: 1px solid #dadde2; border-radius: 6px;
  padding: 12px 16px; margin: 14px 0; }
section.empty p { color: #666; font-style: italic; }
p { margin: 4px 0 8px; max-width: 90ch; }
.verdict { font-size: 16px; font-weight: 600; padding: 10px 14px; border-radius: 6px;
  max-width: none; }
.verdict.fail { background: #b71c1c; color: #fff; }
.verdict.pass { background: #e7f4ea; color: #1b5e30; border: 1px solid #a5d6b2; }
.figure { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; margin: 10px 0; }
svg.plot { display: block; max-width: 100%; height: auto; border: 1px solid #e4e6ea; }
.table-box { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: 0 0 4px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e4e6ea; text-align: left;
  vertical-align: top; }
thead th { border-bottom: 2px solid #c5c9d0; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; }
tr.failed th, tr.failed td { background: #fdecea; color: #a00000; font-weight: 600; }
code { font: 12.5px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  background: #f0f2f4; padding: 0 3px; border-radius: 3px; overflow-wrap: break-word; }
.verdict code { background: rgba(255, 255, 255, 0.85); color: #7a0000; }
"""


def evaluation_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML document: the gates first (a failed gate in red, with its metric,
    value and threshold), the headline figures, then each section's plots (inline SVG) beside
    tables of the same numbers. A section the report lacks is a one-line note."""
    page = evaluation_page(report)
    title = f"Evaluation report — run {page.run_id}"
    links = "".join(f'<a href="#{s.anchor}">{escape(s.title)}</a>' for s in page.sections)
    facts = "".join(f"<p>{_inline(fact)}</p>" for fact in page.facts)
    body = "".join(_section(section) for section in page.sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>Evaluation report — run <code>{escape(page.run_id)}</code></h1>"
        f"{facts}<nav>{links}</nav></header>\n{body}</main>\n</body>\n</html>\n"
    )


def _section(section: Section) -> str:
    classes = "" if section.figures else ' class="empty"'
    parts = [f'<section id="{section.anchor}"{classes}>', f"<h2>{escape(section.title)}</h2>"]
    for position, note in enumerate(section.notes):
        if position == 0 and section.verdict is not None:
            mark = "✗" if section.verdict == "fail" else "✓"
            parts.append(f'<p class="verdict {section.verdict}">{mark} {_inline(note)}</p>')
        else:
            parts.append(f"<p>{_inline(note)}</p>")
    parts += [_figure(figure) for figure in section.figures]
    parts.append("</section>\n")
    return "".join(parts)


def _figure(figure: Figure) -> str:
    plots = "".join(render(plot) for plot in figure.plots)
    return f'<div class="figure">{plots}<div class="table-box">{_table(figure.table)}</div></div>'


def _table(table: Table) -> str:
    """A table whose first column heads its rows; a failed gate's row has class ``failed``."""
    head = "".join(f'<th scope="col">{escape(column)}</th>' for column in table.columns)
    rows: list[str] = []
    for row in table.rows:
        cells = [
            _cell(cell, "th" if position == 0 else "td") for position, cell in enumerate(row.cells)
        ]
        marked = ' class="failed"' if row.failed else ""
        rows.append(f"<tr{marked}>{''.join(cells)}</tr>")
    return (
        f"<table><caption>{escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _cell(cell: Cell, tag: str) -> str:
    scope = ' scope="row"' if tag == "th" else ""
    numeric = ' class="num"' if cell.kind == "number" else ""
    return f"<{tag}{scope}{numeric}>{_content(cell)}</{tag}>"


def _inline(note: Note | Sequence[Cell]) -> str:
    return "".join(_content(cell) for cell in note)


def _content(cell: Cell) -> str:
    if cell.kind == "key" and cell.text:
        return f"<code>{escape(cell.text)}</code>"
    return escape(cell.text)
