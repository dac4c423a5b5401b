"""Small SVG charts for the evaluation report: a line chart, a grouped bar chart and a histogram.

Each chart is described by a frozen dataclass and drawn by a function that returns one ``<svg>``
element as a string: well-formed XML (``xml.etree`` parses it), with ``width``, ``height`` and
``viewBox``, the chart's ``id``, class ``plot``, ``role="img"`` and a ``<title>``. Every label is
escaped here, so callers pass plain text. Hovering a point or a bar shows its value (an SVG
``<title>``, no script).

Why drawn by hand rather than with matplotlib: the three charts are a few dozen lines of SVG each,
while matplotlib is a ~40 MB dependency the project has no other use for; and the report page must
be self-contained (no script, no file beside it, no URL), which inline SVG is by construction. The
``<svg>`` carries no ``xmlns``: it is meant to be inlined in HTML, where the namespace is implied,
and leaving it out keeps the page free of any URL at all.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D1F", "#555555")

WIDTH = 520
_AREA_HEIGHT = 220
_LEFT, _RIGHT, _TOP = 60, 16, 34
_X_AXIS_SPACE = 42
_INSET = 14
# Average advance of a 12 px sans-serif glyph: enough to lay out legends and shorten labels.
_CHAR = 6.6
_LEGEND_ROW = 18
_FONT = 'font-family="sans-serif" font-size="12" fill="#222"'

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape(text: object) -> str:
    """``text`` as character data safe in HTML and in XML: markup characters escaped, and the
    characters XML 1.0 forbids (control characters, lone surrogates) dropped."""
    return html.escape(_NOT_XML.sub("", str(text)), quote=True)


@dataclass(frozen=True)
class Series:
    """One line (or one bar per group): a value per x position or group, ``None`` where missing.
    ``color`` indexes ``PALETTE``; a dashed line has hollow markers."""

    label: str
    values: tuple[float | None, ...]
    color: int = 0
    dashed: bool = False


@dataclass(frozen=True)
class LineChart:
    """Lines over shared x positions; ``x_labels`` names each position on the axis ("" for none).
    ``y_limits`` bounds the automatic y range (for fractions, (0, 1))."""

    plot_id: str
    title: str
    x_label: str
    y_label: str
    x: tuple[float, ...]
    x_labels: tuple[str, ...]
    series: tuple[Series, ...]
    y_limits: tuple[float, float] | None = None


@dataclass(frozen=True)
class BarChart:
    """Bars from zero, one per series inside each group."""

    plot_id: str
    title: str
    y_label: str
    groups: tuple[str, ...]
    series: tuple[Series, ...]
    y_limits: tuple[float, float] | None = None


@dataclass(frozen=True)
class Marker:
    """A vertical line across a histogram at ``value`` (a percentile, say)."""

    label: str
    value: float
    color: int = 3


@dataclass(frozen=True)
class Histogram:
    """How many samples fall in each of ``bins`` equal bins (automatic when ``None``)."""

    plot_id: str
    title: str
    x_label: str
    samples: tuple[float, ...]
    markers: tuple[Marker, ...] = ()
    bins: int | None = None


Plot = LineChart | BarChart | Histogram


def render(plot: Plot) -> str:
    """The ``<svg>`` element of any chart."""
    if isinstance(plot, LineChart):
        return line_chart(plot)
    if isinstance(plot, BarChart):
        return grouped_bar_chart(plot)
    return histogram(plot)


def line_chart(chart: LineChart) -> str:
    """Each series as a polyline with a marker per value (so a single value still shows)."""
    values = [v for s in chart.series for v in s.values if v is not None]
    y_axis = _value_axis(values, chart.y_limits, from_zero=False)
    lo, hi = (min(chart.x), max(chart.x)) if chart.x else (0.0, 1.0)
    x_axis = _Axis(lo - 1, hi + 1, ()) if hi == lo else _Axis(lo, hi, ())
    entries = [(s.label, s.color, "dashed" if s.dashed else "line") for s in chart.series]
    frame = _Frame(chart.plot_id, chart.title, x_axis, y_axis, entries, inset=_INSET)
    parts = [frame.grid(chart.y_label)]
    for position, label in zip(chart.x, chart.x_labels, strict=False):
        parts.append(frame.x_tick(frame.x(position), label))
    for series in chart.series:
        parts.append(_line(frame, chart.x, series))
    parts.append(frame.x_title(chart.x_label))
    return frame.close(parts)


def grouped_bar_chart(chart: BarChart) -> str:
    """Groups side by side along x; inside each group one bar per series, in series order."""
    values = [v for s in chart.series for v in s.values if v is not None]
    y_axis = _value_axis(values, chart.y_limits, from_zero=True)
    groups = max(len(chart.groups), 1)
    entries = [(s.label, s.color, "box") for s in chart.series]
    frame = _Frame(chart.plot_id, chart.title, _Axis(0, groups, ()), y_axis, entries)
    parts = [frame.grid(chart.y_label)]
    band = frame.area_width / groups
    bar = band * 0.8 / max(len(chart.series), 1)
    for g, group in enumerate(chart.groups):
        start = frame.left + g * band + band * 0.1
        parts.append(frame.x_tick(frame.left + (g + 0.5) * band, _shorten(group, band)))
        for s, series in enumerate(chart.series):
            value = series.values[g] if g < len(series.values) else None
            if value is None:
                continue
            top = frame.y(max(min(value, y_axis.hi), y_axis.lo))
            parts.append(
                f'<rect x="{start + s * bar:.1f}" y="{top:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{max(frame.y(y_axis.lo) - top, 0):.1f}" fill="{_color(series.color)}">'
                f"<title>{escape(group)} · {escape(series.label)}: {_number(value)}</title></rect>"
            )
    return frame.close(parts)


def histogram(chart: Histogram) -> str:
    """Counts per bin as adjoining bars, with each marker as a dashed line labelled at the top."""
    samples = chart.samples
    lo, hi = (min(samples), max(samples)) if samples else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - max(abs(lo) * 0.05, 0.5), hi + max(abs(hi) * 0.05, 0.5)
    bins = chart.bins or min(max(math.ceil(math.sqrt(len(samples))), 5), 30)
    counts = [0] * bins
    for sample in samples:
        counts[min(int((sample - lo) / (hi - lo) * bins), bins - 1)] += 1
    x_axis = _value_axis([lo, hi, *(m.value for m in chart.markers)], None, from_zero=False)
    y_axis = _value_axis([0, max(counts, default=1)], None, from_zero=True, whole=True)
    entries = [("samples", 5, "box")] + [
        (f"{m.label} {_number(m.value)}", m.color, "dashed") for m in chart.markers
    ]
    frame = _Frame(chart.plot_id, chart.title, x_axis, y_axis, entries)
    parts = [frame.grid("samples")]
    for tick in x_axis.ticks:
        parts.append(frame.x_tick(frame.x(tick), _number(tick, x_axis.step)))
    width = (hi - lo) / bins
    for b, count in enumerate(counts):
        left, right = frame.x(lo + b * width), frame.x(lo + (b + 1) * width)
        top = frame.y(count)
        parts.append(
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{max(right - left - 1, 1):.1f}" '
            f'height="{frame.y(0) - top:.1f}" fill="{_color(5)}"><title>'
            f"{_number(lo + b * width)}–{_number(lo + (b + 1) * width)}: {count}</title></rect>"
        )
    for row, marker in enumerate(chart.markers):
        x = frame.x(marker.value)
        label = f"{marker.label} {_number(marker.value)}"
        anchor, dx = ("end", -4) if x > frame.right - len(label) * _CHAR else ("start", 4)
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{frame.bottom}" '
            f'stroke="{_color(marker.color)}" stroke-width="2" stroke-dasharray="5 3"/>'
            f'<text x="{x + dx:.1f}" y="{frame.top + 12 + 13 * (row % 3)}" '
            f'text-anchor="{anchor}" {_FONT}>{escape(label)}</text>'
        )
    parts.append(frame.x_title(chart.x_label))
    return frame.close(parts)


@dataclass(frozen=True)
class _Axis:
    lo: float
    hi: float
    ticks: tuple[float, ...]
    step: float = 1.0


class _Frame:
    """The chart's box: maps values to pixels and draws the parts every chart shares."""

    def __init__(
        self,
        plot_id: str,
        title: str,
        x_axis: _Axis,
        y_axis: _Axis,
        legend: Sequence[tuple[str, int, str]],
        inset: float = 0,
    ) -> None:
        self.plot_id, self.title, self.x_axis, self.y_axis = plot_id, title, x_axis, y_axis
        self.left, self.right = _LEFT, WIDTH - _RIGHT
        self.top, self.bottom = _TOP, _TOP + _AREA_HEIGHT
        self.area_width = self.right - self.left
        self.inset = inset
        self.legend, legend_height = _legend(legend, self.bottom + _X_AXIS_SPACE + 6)
        self.height = self.bottom + _X_AXIS_SPACE + legend_height + 8

    def x(self, value: float) -> float:
        span = (self.x_axis.hi - self.x_axis.lo) or 1.0
        usable = self.area_width - 2 * self.inset
        return self.left + self.inset + (value - self.x_axis.lo) / span * usable

    def y(self, value: float) -> float:
        span = (self.y_axis.hi - self.y_axis.lo) or 1.0
        return self.bottom - (value - self.y_axis.lo) / span * (self.bottom - self.top)

    def grid(self, y_label: str) -> str:
        """Title, background, horizontal grid lines with y tick labels, and the y axis title."""
        parts = [
            f'<rect x="0" y="0" width="{WIDTH}" height="{self.height}" fill="#fff"/>',
            f'<text x="{WIDTH / 2:.0f}" y="20" text-anchor="middle" font-weight="bold" '
            f"{_FONT}>{escape(self.title)}</text>",
        ]
        for tick in self.y_axis.ticks:
            y = self.y(tick)
            parts.append(
                f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.right}" y2="{y:.1f}" '
                f'stroke="#e3e3e3"/><text x="{self.left - 6}" y="{y + 4:.1f}" '
                f'text-anchor="end" {_FONT}>{_number(tick, self.y_axis.step)}</text>'
            )
        middle = (self.top + self.bottom) / 2
        parts.append(
            f'<text x="14" y="{middle:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {middle:.0f})" {_FONT}>{escape(y_label)}</text>'
        )
        return "".join(parts)

    def x_tick(self, x: float, label: str) -> str:
        return (
            f'<line x1="{x:.1f}" y1="{self.bottom}" x2="{x:.1f}" y2="{self.bottom + 4}" '
            f'stroke="#444"/><text x="{x:.1f}" y="{self.bottom + 17}" text-anchor="middle" '
            f"{_FONT}>{escape(label)}</text>"
        )

    def x_title(self, label: str) -> str:
        return (
            f'<text x="{(self.left + self.right) / 2:.0f}" y="{self.bottom + 34}" '
            f'text-anchor="middle" {_FONT}>{escape(label)}</text>'
        )

    def close(self, parts: Sequence[str]) -> str:
        """The whole ``<svg>``: the parts, then the axes on top, then the legend."""
        axes = (
            f'<path d="M{self.left} {self.top}V{self.bottom}H{self.right}" fill="none" '
            f'stroke="#444"/>'
        )
        return (
            f'<svg id="{escape(self.plot_id)}" class="plot" width="{WIDTH}" '
            f'height="{self.height}" viewBox="0 0 {WIDTH} {self.height}" role="img" '
            f'aria-labelledby="{escape(self.plot_id)}-title">'
            f'<title id="{escape(self.plot_id)}-title">{escape(self.title)}</title>'
            f"{''.join(parts)}{axes}{self.legend}</svg>"
        )


def _line(frame: _Frame, xs: Sequence[float], series: Series) -> str:
    """A series' polylines (broken where a value is missing) and its markers."""
    color = _color(series.color)
    dash = ' stroke-dasharray="6 4"' if series.dashed else ""
    runs: list[list[str]] = [[]]
    markers: list[str] = []
    for x, value in zip(xs, series.values, strict=False):
        if value is None:
            runs.append([])
            continue
        px, py = frame.x(x), frame.y(value)
        runs[-1].append(f"{px:.1f},{py:.1f}")
        fill = "#fff" if series.dashed else color
        markers.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{fill}" stroke="{color}" '
            f'stroke-width="1.5"><title>{escape(series.label)}: {_number(value)}</title></circle>'
        )
    lines = [
        f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
        for run in runs
        if len(run) > 1
    ]
    return "".join(lines + markers)


def _legend(entries: Sequence[tuple[str, int, str]], top: float) -> tuple[str, float]:
    """Legend entries laid left to right, wrapping into rows; the SVG and the height it takes."""
    parts: list[str] = []
    x, row = float(_LEFT), 0
    for label, color, style in entries:
        text = _shorten(label, WIDTH - _LEFT - _RIGHT - 30)
        width = 30 + len(text) * _CHAR + 14
        if x + width > WIDTH - _RIGHT and x > _LEFT:
            x, row = float(_LEFT), row + 1
        y = top + row * _LEGEND_ROW
        if style == "box":
            swatch = (
                f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="22" height="10" fill="{_color(color)}"/>'
            )
        else:
            dash = ' stroke-dasharray="6 4"' if style == "dashed" else ""
            swatch = (
                f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 22:.1f}" y2="{y - 4:.1f}" '
                f'stroke="{_color(color)}" stroke-width="2"{dash}/>'
            )
        parts.append(f'{swatch}<text x="{x + 28:.1f}" y="{y:.1f}" {_FONT}>{escape(text)}</text>')
        x += width
    rows = row + 1 if entries else 0
    return f'<g class="legend">{"".join(parts)}</g>', rows * _LEGEND_ROW


def _value_axis(
    values: Sequence[float],
    limits: tuple[float, float] | None,
    *,
    from_zero: bool,
    whole: bool = False,
) -> _Axis:
    """A range a little wider than ``values`` with round bounds, inside ``limits``, and its ticks
    (about five, on steps of 1, 2, 2.5 or 5 times a power of ten; whole numbers if ``whole``)."""
    if values:
        lo, hi = min(values), max(values)
        if from_zero:
            lo = min(lo, 0.0)
        pad = (hi - lo) * 0.05 if hi > lo else max(abs(hi) * 0.05, 0.05)
        if limits:
            # A few hundredths of a share should not fill the whole height.
            pad = max(pad, (limits[1] - limits[0]) * 0.02)
        lo, hi = (lo if from_zero else lo - pad), hi + pad
    else:
        lo, hi = limits or (0.0, 1.0)
    if limits:
        lo, hi = max(lo, limits[0]), min(hi, limits[1])
        if hi <= lo:
            lo, hi = limits
    step = _nice_step((hi - lo) / 5)
    if whole:
        step = max(step, 1.0)
    lo = math.floor(lo / step + 1e-9) * step
    hi = math.ceil(hi / step - 1e-9) * step
    if limits:
        lo, hi = max(lo, limits[0]), min(hi, limits[1])
    count = round((hi - lo) / step)
    return _Axis(lo, hi, tuple(lo + i * step for i in range(count + 1)), step)


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))


def _number(value: float, step: float | None = None) -> str:
    """A tick label with the decimals its ``step`` needs, or a value with four significant
    digits."""
    if step is None:
        return f"{value:.4g}"
    decimals = 0
    while decimals < 6 and abs(round(step, decimals) - step) > 1e-9 * step:
        decimals += 1
    return f"{value:.{decimals}f}"


def _shorten(label: str, pixels: float) -> str:
    """``label`` cut to fit ``pixels`` (the full label stays in the table beside the chart)."""
    room = max(int(pixels / _CHAR), 2)
    return label if len(label) <= room else label[: room - 1] + "…"


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]
