"""The report's curves, drawn by matplotlib (Agg: no display); heatmap panels: storage.store.render.save_panels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are written by workers and servers without a display
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100


def save_line_chart(path: Path, series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str,
                    ylabel: str, ylim: tuple[float, float] | None = None) -> None:
    """One line per `series[name] = (xs, ys)`, with markers, a legend and labelled axes, saved as a PNG."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=DPI, layout="constrained")
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.ticklabel_format(axis="y", useOffset=False)  # plain ticks, not '1e-5+3.341e-1' over a narrow range
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small", frameon=False)
    fig.savefig(path)
    plt.close(fig)
