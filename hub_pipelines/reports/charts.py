"""Charts for the reports: matplotlib figures rendered to PNG bytes (Agg canvas, no pyplot state,
no display, safe in threads). The reports embed them as base64 data URIs: nothing is fetched."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import datetime

import matplotlib

matplotlib.use("Agg", force=False)

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]
_DPI = 110


def _figure(width: float = 8.0, height: float = 3.2) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(True, alpha=0.25)
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def _dates(axes) -> None:
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _y_format(axes, kind: str) -> None:
    if kind == "percent":
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    elif kind == "usd":
        axes.yaxis.set_major_formatter(
            FuncFormatter(lambda v, _p: f"${v:,.2f}" if abs(v) < 100 else f"${v:,.0f}")
        )


def _empty(axes, text: str = "no data") -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#6b7280")


def line_chart(
    series: Mapping[str, tuple[Sequence[datetime], Sequence[float]]],
    *,
    title: str,
    ylabel: str = "",
    kind: str = "number",
    styles: Mapping[str, str] | None = None,
) -> bytes:
    """One line per series over time."""
    figure, axes = _figure()
    drawn = False
    for i, (label, (xs, ys)) in enumerate(series.items()):
        if len(xs):
            axes.plot(list(xs), list(ys), label=label, color=PALETTE[i % len(PALETTE)],
                      linestyle=(styles or {}).get(label, "-"), marker="o" if len(xs) <= 14 else None,
                      markersize=3, linewidth=1.6)  # fmt: skip
            drawn = True
    if drawn:
        _dates(axes)
        if len(series) > 1:
            axes.legend(loc="best", fontsize=8, frameon=False)
    else:
        _empty(axes)
    _y_format(axes, kind)
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_ylabel(ylabel, fontsize=9)
    return _png(figure)


def bar_chart(
    categories: Sequence[str],
    stacks: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str = "",
    kind: str = "number",
    horizontal: bool = False,
) -> bytes:
    """Bars per category, stacked by the keys of `stacks` (one key: plain bars)."""
    height = max(3.0, 0.32 * len(categories) + 1.2) if horizontal else 3.2
    figure, axes = _figure(height=height)
    if not categories:
        _empty(axes)
    else:
        bottom = [0.0] * len(categories)
        positions = list(range(len(categories)))
        for i, (label, values) in enumerate(stacks.items()):
            values = [float(v) for v in values]
            if horizontal:
                axes.barh(positions, values, left=bottom, label=label, color=PALETTE[i % len(PALETTE)])
            else:
                axes.bar(positions, values, bottom=bottom, label=label, color=PALETTE[i % len(PALETTE)])
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        if horizontal:
            axes.set_yticks(positions, list(categories), fontsize=8)
            axes.invert_yaxis()
        else:
            axes.set_xticks(positions, list(categories), rotation=20, ha="right", fontsize=8)
        if len(stacks) > 1:
            axes.legend(loc="best", fontsize=8, frameon=False)
    if not horizontal:
        _y_format(axes, kind)
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_ylabel(ylabel, fontsize=9)
    return _png(figure)


def forecast_chart(
    history: tuple[Sequence[datetime], Sequence[float]],
    forecast: tuple[Sequence[datetime], Sequence[float], Sequence[float], Sequence[float]],
    *,
    title: str,
    as_of: datetime | None = None,
    ylabel: str = "",
    kind: str = "number",
    level: float = 0.95,
) -> bytes:
    """History, forecast and its band (level, e.g. 95%), with a marker at the forecast origin."""
    figure, axes = _figure()
    hx, hy = history
    fx, fy, lower, upper = forecast
    if len(hx):
        axes.plot(list(hx), list(hy), color=PALETTE[0], linewidth=1.4, label="actual")
    if len(fx):
        axes.fill_between(list(fx), list(lower), list(upper), color=PALETTE[1], alpha=0.18,
                          label=f"{level:.0%} interval")  # fmt: skip
        axes.plot(list(fx), list(fy), color=PALETTE[1], linewidth=1.6, linestyle="--", label="forecast")
    if as_of is not None and (len(hx) or len(fx)):
        axes.axvline(as_of, color="#6b7280", linewidth=0.8, linestyle=":")
    if len(hx) or len(fx):
        _dates(axes)
        axes.legend(loc="upper left", fontsize=8, frameon=False)
    else:
        _empty(axes)
    _y_format(axes, kind)
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_ylabel(ylabel, fontsize=9)
    return _png(figure)
