"""Line charts with numpy + PIL only (no plotting library): one line per method, axes, ticks, a legend."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]
MARGIN = (52, 28, 16, 40)  # left, top, right, bottom


def line_chart(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = (520, 340), ylim: tuple[float, float] | None = None) -> Image.Image:
    """`series[name] = (xs, ys)`; y range from the data unless `ylim` is given."""
    width, height = size
    left, top, right, bottom = MARGIN
    img = Image.new("RGB", size, "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    xs_all = np.concatenate([np.asarray(x, float) for x, _ in series.values()]) if series else np.array([0.0, 1.0])
    ys_all = np.concatenate([np.asarray(y, float) for _, y in series.values()]) if series else np.array([0.0, 1.0])
    x0, x1 = float(np.nanmin(xs_all)), float(np.nanmax(xs_all))
    y0, y1 = ylim or (float(np.nanmin(ys_all)), float(np.nanmax(ys_all)))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def at(x, y):
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline="#444")
    for tick in np.linspace(0, 1, 6):
        xv, yv = x0 + tick * (x1 - x0), y0 + tick * (y1 - y0)
        px, py = at(xv, yv)
        draw.line([px, height - bottom, px, height - bottom + 4], fill="#444")
        draw.text((px - 10, height - bottom + 6), f"{xv:.2g}", fill="black", font=font)
        draw.line([left - 4, py, left, py], fill="#444")
        draw.line([left, py, width - right, py], fill="#eee")
        draw.text((4, py - 6), f"{yv:.3g}", fill="black", font=font)
    draw.text((left, 8), f"{title} · {ylabel}", fill="black", font=font)
    draw.text(((width - len(xlabel) * 6) / 2, height - 14), xlabel, fill="black", font=font)
    for k, (xs, ys) in enumerate(series.values()):
        colour = PALETTE[k % len(PALETTE)]
        points = [at(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
    draw.rectangle([width - right - 114, top + 2, width - right - 2, top + 8 + 13 * len(series)], fill="white",
                   outline="#ccc")
    for k, name in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        ly = top + 6 + 13 * k
        draw.line([width - right - 110, ly + 5, width - right - 96, ly + 5], fill=colour, width=2)
        draw.text((width - right - 92, ly), name[:15], fill="black", font=font)
    return img
