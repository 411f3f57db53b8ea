"""Server-rendered SVG charts for the dashboards: no JavaScript, no external library.

Every chart is a standalone, valid XML ``<svg>`` with ``role="img"``, an ``aria-label`` and a
``<title>``; each bar or point carries its own ``<title>`` (the browser's hover text). All text
(labels and series names are user data: usernames, bank names) is escaped, and characters
that XML cannot hold at all are replaced with U+FFFD. Values must be finite and non-negative
(counts, minutes, shares); an empty chart says "no data".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

#: Okabe-Ito colours (distinguishable with colour-vision deficiencies), each with at least
#: 3:1 contrast against the white background (WCAG 1.4.11 for graphical objects).
PALETTE = ("#0072B2", "#D55E00", "#007A5A", "#B0468A", "#5F5F5F", "#8C6D00")
BACKGROUND = "#FFFFFF"
INK = "#222222"
GRID = "#DDDDDD"
FONT = 'font-family="system-ui, sans-serif"'

_MARGIN_LEFT = 60
_MARGIN_RIGHT = 16
_MARGIN_BOTTOM = 28
_TITLE_H = 22
_LEGEND_ROW_H = 18
_CHAR_W = 6.5  # average glyph width at 11px, for layout estimates
_MAX_LABEL_CHARS = 24
_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _INVALID_XML.sub("\ufffd", text)


def _text(text: str) -> str:
    """Escaped for element content."""
    return escape(_clean(text))


def _attr(text: str) -> str:
    """Escaped for a double-quoted attribute value (newlines kept as character references)."""
    return escape(
        _clean(text), {'"': "&quot;", "'": "&apos;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
    )


def _short(text: str, limit: int = _MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(v: float) -> str:
    """A coordinate: two decimals, no trailing zeros."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def format_value(v: float) -> str:
    """A value for hover text and tick labels: thousands separators, at most 2 decimals."""
    if float(v).is_integer():
        return f"{int(v):,}"
    s = f"{v:,.2f}".rstrip("0").rstrip(".")
    return s if s not in ("", "-0") else "0"


def nice_ticks(top: float, target: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (steps 1, 2 or 5 times a power of ten)."""
    if not math.isfinite(top) or top < 1e-12:
        return [0.0, 1.0]
    raw = top / target
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 5.0, 10.0) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    decimals = max(0, -math.floor(math.log10(step)))
    return [round(i * step, decimals) for i in range(n + 1)]


def _validate(labels: Sequence[str], series: Mapping[str, Sequence[float]]) -> None:
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
        for v in values:
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"chart values must be finite and non-negative, got {v!r}")


def _open(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_attr(title or "chart")}">',
        f"<title>{_text(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="{BACKGROUND}"/>',
        f'<text x="{width / 2:g}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="bold" fill="{INK}" {FONT}>{_text(_short(title, 90))}</text>',
    ]


def _empty(title: str, width: int, height: int) -> str:
    parts = _open(title, width, height)
    parts.append(
        f'<text class="no-data" x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle" '
        f'font-size="13" fill="{INK}" {FONT}>no data</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(names: Sequence[str], width: int) -> tuple[list[str], int]:
    """Legend entries, wrapped into rows under the title; returns (svg parts, rows used)."""
    parts: list[str] = ['<g class="legend">']
    x, row = float(_MARGIN_LEFT), 0
    for i, name in enumerate(names):
        shown = _short(name)
        w = 14 + len(shown) * _CHAR_W + 14
        if x + w > width - _MARGIN_RIGHT and x > _MARGIN_LEFT:
            x, row = float(_MARGIN_LEFT), row + 1
        y = _TITLE_H + row * _LEGEND_ROW_H
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<rect x="{_num(x)}" y="{y + 4}" width="10" height="10" fill="{colour}">'
            f"<title>{_text(name)}</title></rect>"
        )
        parts.append(
            f'<text x="{_num(x + 14)}" y="{y + 13}" font-size="11" fill="{INK}" {FONT}>'
            f"{_text(shown)}</text>"
        )
        x += w
    parts.append("</g>")
    return parts, row + 1 if names else 0


def _axes(
    labels: Sequence[str],
    ticks: Sequence[float],
    left: float,
    top: float,
    plot_w: float,
    plot_h: float,
    slot_centres: Sequence[float],
    y_label: str,
) -> list[str]:
    bottom = top + plot_h
    parts = ['<g class="axes">']
    ymax = ticks[-1]
    for t in ticks:
        y = bottom - t / ymax * plot_h
        parts.append(
            f'<line x1="{_num(left)}" y1="{_num(y)}" x2="{_num(left + plot_w)}" y2="{_num(y)}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="tick" x="{_num(left - 6)}" y="{_num(y + 4)}" text-anchor="end" '
            f'font-size="11" fill="{INK}" {FONT}>{_text(format_value(t))}</text>'
        )
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(top)}" x2="{_num(left)}" y2="{_num(bottom)}" '
        f'stroke="{INK}" stroke-width="1"/>'
    )
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(bottom)}" x2="{_num(left + plot_w)}" '
        f'y2="{_num(bottom)}" stroke="{INK}" stroke-width="1"/>'
    )
    # Thin the x labels so they do not overlap: show every k-th one.
    longest = max((len(_short(label, 16)) for label in labels), default=1)
    slot = plot_w / max(len(labels), 1)
    every = max(1, math.ceil((longest * _CHAR_W + 6) / slot))
    for i, (label, cx) in enumerate(zip(labels, slot_centres, strict=True)):
        if i % every:
            continue
        parts.append(
            f'<text class="x-label" x="{_num(cx)}" y="{_num(bottom + 16)}" '
            f'text-anchor="middle" font-size="11" fill="{INK}" {FONT}>'
            f"<title>{_text(label)}</title>{_text(_short(label, 16))}</text>"
        )
    if y_label:
        cy = top + plot_h / 2
        parts.append(
            f'<text class="y-label" x="14" y="{_num(cy)}" text-anchor="middle" font-size="11" '
            f'fill="{INK}" transform="rotate(-90 14 {_num(cy)})" {FONT}>'
            f"{_text(_short(y_label, 40))}</text>"
        )
    parts.append("</g>")
    return parts


def _frame(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    width: int,
    height: int,
    top_value: float,
    y_label: str,
) -> tuple[list[str], float, float, float, float, list[float]]:
    """Opening, legend and axes; returns (parts, left, top, plot_w, plot_h, ticks)."""
    parts = _open(title, width, height)
    legend, rows = _legend(list(series), width)
    parts += legend
    top = _TITLE_H + rows * _LEGEND_ROW_H + 8
    left = float(_MARGIN_LEFT)
    plot_w = max(1.0, width - left - _MARGIN_RIGHT)
    plot_h = max(1.0, height - top - _MARGIN_BOTTOM)
    ticks = nice_ticks(top_value)
    slot = plot_w / len(labels)
    centres = [left + slot * (i + 0.5) for i in range(len(labels))]
    parts += _axes(labels, ticks, left, top, plot_w, plot_h, centres, y_label)
    return parts, left, top, plot_w, plot_h, ticks


def _is_empty(labels: Sequence[str], series: Mapping[str, Sequence[float]]) -> bool:
    return not labels or not series


def bar_chart(
    labels: list[str],
    series: dict[str, list[float]],
    title: str,
    width: int = 640,
    height: int = 240,
    stacked: bool = False,
    y_label: str = "",
) -> str:
    """A bar chart: one group (or one stack, ``stacked=True``) of bars per label, one bar per
    series. Each bar is a ``<rect class="bar">`` whose height is proportional to its value,
    with ``data-series``/``data-label``/``data-value`` attributes and a hover ``<title>``."""
    _validate(labels, series)
    if _is_empty(labels, series):
        return _empty(title, width, height)
    names = list(series)
    if stacked:
        top_value = max(sum(series[n][i] for n in names) for i in range(len(labels)))
    else:
        top_value = max(max(v) for v in series.values())
    parts, left, top, plot_w, plot_h, ticks = _frame(
        title, labels, series, width, height, top_value, y_label
    )
    bottom = top + plot_h
    scale = plot_h / ticks[-1]
    slot = plot_w / len(labels)
    group_w = slot * 0.8
    parts.append('<g class="bars">')
    for i, label in enumerate(labels):
        x0 = left + slot * i + (slot - group_w) / 2
        base = bottom
        for k, name in enumerate(names):
            v = float(series[name][i])
            h = v * scale
            if stacked:
                x, w, y = x0, group_w, base - h
                base -= h
            else:
                w = group_w / len(names)
                x, y = x0 + k * w, bottom - h
            hover = f"{label} — {name}: {format_value(v)}"
            parts.append(
                f'<rect class="bar" x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" '
                f'height="{_num(h)}" fill="{PALETTE[k % len(PALETTE)]}" '
                f'data-series="{_attr(name)}" data-label="{_attr(label)}" data-value="{v!r}">'
                f"<title>{_text(hover)}</title></rect>"
            )
    parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


def line_chart(
    labels: list[str],
    series: dict[str, list[float]],
    title: str,
    width: int = 640,
    height: int = 240,
    y_label: str = "",
) -> str:
    """A line chart: one ``<polyline class="line">`` per series over the labels, and one
    ``<circle class="point">`` per value (with ``data-*`` attributes and a hover ``<title>``)
    whose height above the x axis is proportional to the value."""
    _validate(labels, series)
    if _is_empty(labels, series):
        return _empty(title, width, height)
    top_value = max(max(v) for v in series.values())
    parts, left, top, plot_w, plot_h, ticks = _frame(
        title, labels, series, width, height, top_value, y_label
    )
    bottom = top + plot_h
    scale = plot_h / ticks[-1]
    slot = plot_w / len(labels)
    xs = [left + slot * (i + 0.5) for i in range(len(labels))]
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        points = [(x, bottom - float(v) * scale) for x, v in zip(xs, values, strict=True)]
        parts.append(f'<g class="series" data-series="{_attr(name)}">')
        parts.append(
            f'<polyline class="line" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(f"{_num(x)},{_num(y)}" for x, y in points)}"/>'
        )
        for label, v, (x, y) in zip(labels, values, points, strict=True):
            hover = f"{label} — {name}: {format_value(v)}"
            parts.append(
                f'<circle class="point" cx="{_num(x)}" cy="{_num(y)}" r="3" fill="{colour}" '
                f'data-label="{_attr(label)}" data-value="{float(v)!r}">'
                f"<title>{_text(hover)}</title></circle>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


__all__ = ["PALETTE", "bar_chart", "format_value", "line_chart", "nice_ticks"]
