"""Pictures of stored maps with numpy + PIL only: heatmap overlays for images, token colours for text."""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 224  # small inputs (28 px Fashion-MNIST) are enlarged so the overlay is readable
TITLE_HEIGHT = 18


def jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colour map (blue → cyan → yellow → red) for values in [0, 1]: uint8 (..., 3)."""
    x = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0], np.float32)  # r, g, b
    rgb = np.clip(1.5 - np.abs(4.0 * x - centres), 0.0, 1.0)
    return (rgb * 255 + 0.5).astype(np.uint8)


def normalise(relevance: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (a constant map becomes zeros)."""
    rel = np.nan_to_num(np.asarray(relevance, np.float32))
    lo, hi = float(rel.min(initial=0.0)), float(rel.max(initial=0.0))
    return (rel - lo) / (hi - lo) if hi > lo else np.zeros_like(rel)


def to_image(value) -> Image.Image:
    """A sample's image (uint8 array, encoded bytes, a file path or a PIL image) as RGB."""
    if isinstance(value, Image.Image):
        img = value
    elif isinstance(value, np.ndarray):
        arr = value
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255 if arr.max(initial=0) <= 1.0 else 1), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
    elif isinstance(value, bytes | bytearray | memoryview):
        img = Image.open(io.BytesIO(bytes(value)))
    elif isinstance(value, str | Path):
        img = Image.open(value)
    else:
        raise ValueError(f"cannot show an image of type {type(value).__name__}")
    img.load()
    return img.convert("RGB")


def overlay(image: Image.Image, relevance: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The map, min-max normalised, upsampled (bilinear) to the image's size and blended over it."""
    rel = np.asarray(relevance, np.float32)
    if rel.ndim != 2:
        raise ValueError(f"an image map must be 2-D (h, w), got shape {rel.shape}")
    heat = Image.fromarray(normalise(rel)).resize(image.size, Image.BILINEAR)
    colours = jet(np.asarray(heat)).astype(np.float32)
    base = np.asarray(image.convert("RGB"), np.float32)
    return Image.fromarray(((1 - alpha) * base + alpha * colours + 0.5).astype(np.uint8))


def heatmap(relevance: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The map alone, when the input image cannot be read again."""
    return Image.fromarray(jet(normalise(relevance))).resize(size, Image.NEAREST)


def image_panels(image: Image.Image | None, maps: list[tuple[str, np.ndarray]], title: str = "") -> Image.Image:
    """[input | overlay per map] side by side, each with a caption; `image=None` draws the bare maps."""
    if image is not None:
        scale = max(1.0, MIN_SIDE / min(image.size))
        size = (round(image.size[0] * scale), round(image.size[1] * scale))
        base = image.resize(size, Image.BILINEAR) if scale > 1 else image
        panels = [("input", base)] + [(caption, overlay(base, rel)) for caption, rel in maps]
    else:
        size = (MIN_SIDE, MIN_SIDE)
        panels = [(caption, heatmap(rel, size)) for caption, rel in maps]
    width = sum(p.size[0] for _, p in panels) + 4 * (len(panels) - 1)
    top = TITLE_HEIGHT * (2 if title else 1)
    canvas = Image.new("RGB", (width, size[1] + top), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    if title:
        draw.text((2, 2), title, fill="black", font=font)
    x = 0
    for caption, panel in panels:
        canvas.paste(panel, (x, top))
        draw.text((x + 2, top - TITLE_HEIGHT + 3), caption, fill="black", font=font)
        x += panel.size[0] + 4
    return canvas


def token_weights(relevance: np.ndarray, special: np.ndarray | None = None) -> np.ndarray:
    """Per-token weights in [-1, 1]: relevance over the largest |relevance| of the non-special tokens."""
    rel = np.nan_to_num(np.asarray(relevance, np.float32).ravel())
    mask = np.ones(rel.shape, bool) if special is None else ~np.asarray(special, bool).ravel()
    scale = float(np.abs(rel[mask]).max(initial=0.0)) if mask.any() else 0.0
    weights = rel / scale if scale > 0 else np.zeros_like(rel)
    if special is not None:
        weights[~mask] = 0.0
    return np.clip(weights, -1.0, 1.0)


def token_colour(weight: float) -> str:
    """White → red for positive weights, white → blue for negative ones, as #rrggbb."""
    w = float(np.clip(weight, -1.0, 1.0))
    fade = round(255 * (1 - abs(w)))
    return f"#ff{fade:02x}{fade:02x}" if w >= 0 else f"#{fade:02x}{fade:02x}ff"


TOKEN_STYLE = ("span.t{padding:1px 2px;margin:1px;border-radius:3px;display:inline-block}span.s{color:#888}"
               "span.target{outline:2px solid #222}")


def tokens_markup(tokens: list[str], relevance: np.ndarray, special: np.ndarray | None = None,
                  target: str | None = None) -> str:
    """One paragraph of coloured tokens (hover: the value); `target`, when given, is the token the map explains,
    appended outlined (a generated token, whose map covers the tokens before it)."""
    weights = token_weights(relevance, special)
    parts = ["<p>"]
    for i, token in enumerate(tokens):
        cls = "t s" if special is not None and bool(special[i]) else "t"
        parts.append(f"<span class='{cls}' style='background:{token_colour(weights[i])}' "
                     f"title='{float(relevance[i]):.4g}'>{html.escape(token)}</span>")
    if target is not None:
        parts.append(f" → <span class='t target' title='the token this map explains'>{html.escape(target)}</span>")
    return "".join(parts) + "</p>"


def tokens_html(sections: list[tuple[str, list[str], np.ndarray, np.ndarray | None]], title: str = "") -> str:
    """A standalone HTML page: one paragraph of coloured tokens per (heading, tokens, relevance, special)."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}{TOKEN_STYLE}</style></head><body>"]
    if title:
        parts.append(f"<h2>{html.escape(title)}</h2>")
    for heading, tokens, relevance, special in sections:
        parts.append(f"<h3>{html.escape(heading)}</h3>{tokens_markup(tokens, relevance, special)}")
    parts.append("</body></html>")
    return "".join(parts)
