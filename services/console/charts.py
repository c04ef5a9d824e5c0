"""Charts drawn on the server as inline SVG: no script, no asset from anywhere else.

Each piece is a fixed template with its values escaped in (``Markup.format``), so the
markup these functions return is safe to put into an autoescaped page as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from markupsafe import Markup


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _band(score: float, green: float, yellow: float) -> str:
    return "green" if score >= green else "yellow" if score >= yellow else "red"


def sparkline(
    days: Sequence[date],
    scores: Sequence[float],
    *,
    start: date,
    span_days: int = 90,
    width: int = 120,
    height: int = 28,
    green: float = 70,
    yellow: float = 40,
) -> Markup:
    """A 0-100 trend over ``span_days`` from ``start``; gaps (unscored days) stay gaps."""
    if not scores:
        return Markup('<span class="muted">no history</span>').format()
    step = (width - 4) / max(span_days - 1, 1)
    pts = [
        f"{_f(2 + (d - start).days * step)},{_f(2 + (100 - s) / 100 * (height - 4))}"
        for d, s in zip(days, scores, strict=True)
    ]
    band = _band(scores[-1], green, yellow)
    last = pts[-1].split(",")
    label = f"score {_f(scores[0])} to {_f(scores[-1])} over {span_days} days"
    return Markup(
        '<svg class="spark" width="{0}" height="{1}" viewBox="0 0 {0} {1}" role="img"'
        ' aria-label="{2}"><title>{2}</title><polyline class="line {3}" points="{4}"/>'
        '<circle class="dot {3}" cx="{5}" cy="{6}" r="1.8"/></svg>'
    ).format(
        width,
        height,
        label,
        band,
        " ".join(pts),
        last[0],
        last[1],
    )


@dataclass(frozen=True)
class Marker:
    day: date
    label: str
    kind: str = "alert"


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str
    kind: str


def line_chart(
    days: Sequence[date],
    values: Sequence[float],
    *,
    start: date,
    end: date,
    title: str,
    y_max: float | None = None,
    thresholds: Sequence[Threshold] = (),
    markers: Sequence[Marker] = (),
    width: int = 720,
    height: int = 200,
    css: str = "series",
) -> Markup:
    """A daily series with optional horizontal thresholds and marked days."""
    left, right, top, bottom = 36, 8, 10, 22
    w, h = width - left - right, height - top - bottom
    top_value = y_max if y_max is not None else max([*values, 1.0]) * 1.1
    span = max((end - start).days, 1)

    def x(d: date) -> float:
        return left + (d - start).days / span * w

    def y(v: float) -> float:
        return top + (1 - min(v, top_value) / top_value) * h

    parts = [_open(width, height, title, left, top, w, h)]
    for frac in (0, 0.5, 1):
        v = top_value * frac
        parts.append(AXIS_Y.format(left - 4, _f(y(v) + 4), _f(v)))
    for t in thresholds:
        parts.append(
            Markup(
                '<line class="threshold {0}" x1="{1}" x2="{2}" y1="{3}" y2="{3}">'
                "<title>{4}</title></line>"
            ).format(
                t.kind,
                left,
                left + w,
                _f(y(t.value)),
                t.label,
            )
        )
    for d, anchor in ((start, "start"), (start + (end - start) / 2, "middle"), (end, "end")):
        parts.append(AXIS_X.format(_f(x(d)), height - 6, d.isoformat(), anchor))
    if values:
        pts = " ".join(f"{_f(x(d))},{_f(y(v))}" for d, v in zip(days, values, strict=True))
        parts.append(Markup('<polyline class="line {0}" points="{1}"/>').format(css, pts))
        last_day, last = days[-1], values[-1]  # a lone day still shows
        parts.append(
            Markup('<circle class="dot {0}" cx="{1}" cy="{2}" r="2.5"/>').format(
                css, _f(x(last_day)), _f(y(last))
            )
        )
    for mk in markers:
        if start <= mk.day <= end:
            parts.append(
                Markup(
                    '<g class="marker {0}"><line x1="{1}" x2="{1}" y1="{2}" y2="{3}"/>'
                    '<circle cx="{1}" cy="{4}" r="4"/><title>{5}: {6}</title></g>'
                ).format(
                    mk.kind,
                    _f(x(mk.day)),
                    top,
                    top + h,
                    top + 4,
                    mk.day.isoformat(),
                    mk.label,
                )
            )
    parts.append(Markup("</svg>").format())
    return Markup("").join(parts)


AXIS_Y = Markup('<text class="axis" x="{0}" y="{1}" text-anchor="end">{2}</text>')
AXIS_X = Markup('<text class="axis" x="{0}" y="{1}" text-anchor="{3}">{2}</text>')


def _open(width: int, height: int, title: str, left: int, top: int, w: int, h: int) -> Markup:
    return Markup(
        '<svg class="chart" width="100%" viewBox="0 0 {0} {1}" role="img" aria-label="{2}">'
        '<title>{2}</title><rect class="plot" x="{3}" y="{4}" width="{5}" height="{6}"/>'
    ).format(
        width,
        height,
        title,
        left,
        top,
        w,
        h,
    )


def week_bars(
    series: dict[str, dict[date, int]],
    *,
    start: date,
    end: date,
    title: str,
    width: int = 720,
    height: int = 200,
) -> Markup:
    """Alerts per week, one bar per series side by side (e.g. current vs edited params)."""
    left, right, top, bottom = 36, 8, 10, 22
    w, h = width - left - right, height - top - bottom
    monday = start - timedelta(days=start.weekday())
    weeks = []
    while monday <= end:
        weeks.append(monday)
        monday += timedelta(days=7)
    top_value = max([1, *(n for s in series.values() for n in s.values())])
    slot = w / max(len(weeks), 1)
    bar = slot * 0.8 / max(len(series), 1)
    parts = [
        _open(width, height, title, left, top, w, h),
        AXIS_Y.format(left - 4, top + 4, top_value),
        AXIS_Y.format(left - 4, top + h + 4, 0),
    ]
    for i, week in enumerate(weeks):
        for j, (name, counts) in enumerate(series.items()):
            n = counts.get(week, 0)
            bh = n / top_value * h
            bx = left + i * slot + slot * 0.1 + j * bar
            parts.append(
                Markup(
                    '<rect class="bar s{0}" x="{1}" y="{2}" width="{3}" height="{4}">'
                    "<title>{5}, week of {6}: {7}</title></rect>"
                ).format(
                    j,
                    _f(bx),
                    _f(top + h - bh),
                    _f(bar),
                    _f(bh),
                    name,
                    week.isoformat(),
                    n,
                )
            )
        if i % max(len(weeks) // 6, 1) == 0:
            parts.append(
                AXIS_X.format(
                    _f(left + i * slot + slot / 2), height - 6, week.strftime("%b %d"), "middle"
                )
            )
    parts.append(Markup("</svg>").format())
    return Markup("").join(parts)
