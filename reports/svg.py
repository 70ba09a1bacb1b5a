"""Server-rendered SVG charts for the pages: colours come from CSS classes (``chart-*`` in
web/static/app.css), so the same markup reads in light and dark mode, and no inline style or
script is needed (the CSP forbids both). Every value is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


def bars(values: Sequence[tuple[str, float, str]], *, width: int = 600, height: int = 180,
         label: str = "") -> str:  # fmt: skip
    """A bar chart of ``(label, value, css class)``."""
    peak = max((v for _, v, _ in values), default=0) or 1
    step = (width - 20) / max(len(values), 1)
    plot = height - 40
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}">',
        f'<line class="chart-axis" x1="10" y1="{plot + 15}" x2="{width - 10}" y2="{plot + 15}"/>',
    ]
    for i, (name, value, cls) in enumerate(values):
        h = round(plot * value / peak, 1)
        x = round(10 + i * step + step * 0.15, 1)
        w = round(step * 0.7, 1)
        mid = round(x + w / 2, 1)
        parts.append(
            f'<rect class="chart-bar {escape(cls)}" x="{x}" y="{plot + 15 - h}" width="{w}"'
            f' height="{h}"><title>{escape(name)}: {value:g}</title></rect>'
        )
        parts.append(
            f'<text class="chart-text" x="{mid}" y="{plot + 11 - h}" text-anchor="middle">'
            f"{value:g}</text>"
        )
        if len(values) <= 20 or i % max(1, len(values) // 10) == 0:
            parts.append(
                f'<text class="chart-text" x="{mid}" y="{height - 8}" text-anchor="middle">'
                f"{escape(name)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def sparkline(values: Sequence[float], *, width: int = 160, height: int = 36,
              label: str = "") -> str:  # fmt: skip
    """A line of ``values`` (percentages 0 to 100) for the dashboard."""
    if len(values) < 2:
        return ""  # a line needs two days
    step = width / max(len(values) - 1, 1)
    points = " ".join(
        f"{round(i * step, 1)},{round(height - 2 - (height - 4) * v / 100, 1)}"
        for i, v in enumerate(values)
    )
    return (
        f'<svg class="chart sparkline" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}"><polyline class="chart-line" points="{points}"/></svg>'
    )
