"""Pictures of stored maps: image maps over their input (matplotlib, imported only to draw), token colours for
text."""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np
from PIL import Image


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


def save_panels(path: Path, image: Image.Image | None, maps: list[tuple[str, np.ndarray]], title: str = "",
                boxes: list[tuple[float, float, float, float]] = ()) -> None:
    """A PNG of [input | one panel per map], drawn by matplotlib: each map over the input (alone when the input cannot
    be read again) with its own title and colour bar; each patch / region drawn as the flat cell it is (no
    interpolation across cell borders); `boxes` (x0, y0, x1, y1 in the input's pixels) outlined on every panel."""
    import matplotlib

    matplotlib.use("Agg")  # no display: workers, servers, CI
    import matplotlib.pyplot as plt

    for _, rel in maps:
        if np.asarray(rel).ndim != 2:
            raise ValueError(f"an image map must be 2-D (h, w), got shape {np.asarray(rel).shape}")
    pixels = None if image is None else np.asarray(image)
    panels = ([("input", None)] if pixels is not None else []) + list(maps)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.3 if title else 3.0), dpi=100,
                             layout="constrained", squeeze=False)
    extent = None if pixels is None else (0, pixels.shape[1], pixels.shape[0], 0)
    for ax, (name, rel) in zip(axes[0], panels):
        ax.set_title(name, fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
        if pixels is not None:
            ax.imshow(pixels, extent=extent)
        if rel is not None:
            shown = ax.imshow(np.nan_to_num(np.asarray(rel, np.float32)), cmap="jet", interpolation="nearest",
                              alpha=0.5 if pixels is not None else 1.0, extent=extent)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.savefig(path)
    plt.close(fig)


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
