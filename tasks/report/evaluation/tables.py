"""The evaluation report as tables and notes, before it is written as Markdown or HTML.

Both renderers read the same ``EvaluationPage``, so the Markdown and the HTML show the same numbers;
the HTML adds a plot beside the tables a ``Figure`` names. Also here: reading the loosely typed
report dict (a JSON document whose sections may be missing or ``null``) and formatting numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tasks.report.evaluation.plots import Plot

MISSING = "—"

_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Cell:
    """A table cell, or a run of text in a note. ``kind`` says how to show it: ``text`` is prose,
    ``key`` an identifier that came from user data (a vector key, a query id, a path: shown as
    code), ``number`` a formatted figure (right-aligned). Text is plain: renderers escape it."""

    text: str
    kind: Literal["text", "key", "number"] = "text"


Note = tuple[Cell, ...]


@dataclass(frozen=True)
class Row:
    """A table row; ``failed`` marks a gate that failed, shown in red."""

    cells: tuple[Cell, ...]
    failed: bool = False


@dataclass(frozen=True)
class Table:
    """A titled table; ``columns`` are its header labels."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Figure:
    """A table and the plots drawn from the same numbers (none in Markdown)."""

    table: Table
    plots: tuple[Plot, ...] = ()


@dataclass(frozen=True)
class Section:
    """One part of the report. A section whose data the report lacks has only a note saying so.
    ``verdict`` is set on the gates section: ``fail`` when any gate failed."""

    anchor: str
    title: str
    notes: tuple[Note, ...] = ()
    figures: tuple[Figure, ...] = ()
    verdict: Literal["pass", "fail"] | None = None


@dataclass(frozen=True)
class EvaluationPage:
    """The whole report: which run it evaluates, a few facts about it, then its sections."""

    run_id: str
    facts: tuple[Note, ...]
    sections: tuple[Section, ...]


def clean(value: object) -> str:
    """``value`` as one line of text without control characters or lone surrogates (which no
    terminal shows, XML forbids and UTF-8 cannot encode)."""
    return _NOT_TEXT.sub("", str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " "))


def text(value: object) -> Cell:
    """Prose."""
    return Cell(clean(value))


def key(value: object) -> Cell:
    """An identifier from user data."""
    return Cell(clean(value), "key")


def mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: a missing section reads as empty."""
    return value if isinstance(value, Mapping) else {}


def items(value: object) -> list[Mapping[str, Any]]:
    """The JSON objects of a list (anything else in it is ignored)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def number(value: object) -> float | None:
    """A finite JSON number as a float; ``None`` for anything else (``null``, text, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def at_k(values: object, k: int) -> float | None:
    """The value for ``k`` in a per-k object, whose keys JSON made strings (``{"10": 0.98}``)."""
    if not isinstance(values, Mapping):
        return None
    return number(values[str(k)] if str(k) in values else values.get(k))


def ks_of(section: Mapping[str, Any], *per_k: object) -> tuple[int, ...]:
    """The cut-offs a section reports: its ``ks`` list, else the keys of its per-k objects."""
    declared = section.get("ks")
    if isinstance(declared, list) and declared:
        found: Iterable[object] = declared
    else:
        found = [k for values in per_k for k in mapping(values)]
    ks = set()
    for k in found:
        if isinstance(k, int) and not isinstance(k, bool):
            ks.add(k)
        elif isinstance(k, str) and k.isdigit():
            ks.add(int(k))
    return tuple(sorted(ks))


def fraction(value: object) -> Cell:
    """A recall, a precision or another share, to three decimals."""
    found = number(value)
    return Cell(MISSING if found is None else f"{found:.3f}", "number")


def count(value: object) -> Cell:
    """A whole number."""
    found = number(value)
    return Cell(MISSING if found is None else f"{found:.0f}", "number")


def milliseconds(value: object) -> Cell:
    """A duration in milliseconds, to two decimals (the column or the label says the unit)."""
    found = number(value)
    return Cell(MISSING if found is None else f"{found:.2f}", "number")


def significant(value: object) -> Cell:
    """A distance or another small real, to four significant digits."""
    found = number(value)
    return Cell(MISSING if found is None else f"{found:.4g}", "number")


def figure(name: str, value: object) -> Cell:
    """A headline figure or a gate's value, formatted by its name: ``…_ms`` is a latency,
    anything else a share (or, above 1, a plain number)."""
    found = number(value)
    if found is None:
        return Cell(MISSING, "number")
    if name.endswith("_ms"):
        return Cell(f"{found:.2f} ms", "number")
    if abs(found) > 1:
        return Cell(f"{found:.4g}", "number")
    return Cell(f"{found:.3f}", "number")


_FAMILIES = ("recall", "precision", "mrr", "ndcg", "map")


def metric_order(names: Iterable[str]) -> tuple[str, ...]:
    """Metric names like ``ndcg@10`` ordered by family (recall, precision, MRR, nDCG, others
    alphabetically), then by k."""

    def rank(name: str) -> tuple[int, str, int, str]:
        family, _, k = name.partition("@")
        position = _FAMILIES.index(family) if family in _FAMILIES else len(_FAMILIES)
        return (position, family, int(k) if k.isdigit() else 0, name)

    return tuple(sorted(set(names), key=rank))


def reference_k(names: Iterable[str]) -> int | None:
    """The k a summary plot shows: 10 when metrics are reported at 10, else the largest k."""
    ks = {int(k) for name in names if (k := name.partition("@")[2]).isdigit()}
    if not ks:
        return None
    return 10 if 10 in ks else max(ks)
