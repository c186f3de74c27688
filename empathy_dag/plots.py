"""Pictures for the Dagster UI: PNG charts embedded in markdown metadata (and written beside the
artifact when a folder is given), because a per-emotion bar chart is read faster than a table."""

from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (laid out tight), and closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **({"dpi": dpi} if dpi else {}))
    plt.close(fig)
    return buf.getvalue()


def bar_chart_png(
    values: dict[str, float] | dict[str, dict[str, float]], title: str, ylabel: str = ""
) -> bytes:
    """One bar per key; with nested dicts ({series: {emotion: value}}) grouped bars per key."""
    plt = pyplot()
    nested = values and isinstance(next(iter(values.values())), dict)
    series = values if nested else {"": values}
    keys = list(dict.fromkeys(k for s in series.values() for k in s))
    fig, ax = plt.subplots(figsize=(max(6, 0.38 * len(keys) * max(1, len(series) / 2)), 3.6), dpi=100)
    width = 0.8 / len(series)
    for i, (name, s) in enumerate(series.items()):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(keys))]
        ax.bar(xs, [s.get(k, 0) for k in keys], width=width, label=name or None)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=60, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if nested:
        ax.legend(fontsize=7)
    return figure_png(fig)


def line_chart_png(
    curves: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str
) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(points) < 50 else None, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return figure_png(fig)
