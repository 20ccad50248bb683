"""Image panels for the Identity Crisis figures.

Turns batches of image tensors into uint8 RGB arrays: grids of inputs and outputs with the
paper's red divider after the training image (figures 2-3), and per-layer hidden maps in the
blue-green 'winter' colour map (figure 4). Every panel is a (H, W, 3) uint8 array, so it can
be saved as a PNG or logged to W&B as is.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
DIVIDER_RED = (220, 20, 40)


def _divider_width(scale: int) -> int:
    # Two source pixels wide, so the bar keeps the same weight relative to the cells at any scale.
    return 2 * scale


def to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float images, C in {1, 3}, values clipped to [0, 1] -> (N, H, W, 3) uint8.

    Grey images (C == 1) are replicated to three channels; NaN becomes 0.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be (N, C, H, W) with C in {{1, 3}}, got shape {tuple(images.shape)}"
        )
    x = images.detach().to("cpu", torch.float32)
    # NaN would otherwise survive clamp and turn into an arbitrary byte.
    x = torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0)
    x = (x * 255.0).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):
        # Pillow built without FreeType only has the fixed-size bitmap font.
        return ImageFont.load_default()


def image_grid(
    rows: Sequence[torch.Tensor],
    *,
    row_labels: Sequence[str] | None = None,
    divider_after: int | None = 0,
    scale: int = 3,
    pad: int = 2,
) -> np.ndarray:
    """A grid of images as one (H, W, 3) uint8 array.

    rows[r] is (N, C, H, W) in [0, 1], C in {1, 3}; all rows share N, H and W. Each cell is
    upscaled by `scale` (nearest) and cells are separated by, and framed with, `pad` white
    pixels. If divider_after is not None, a red bar `2 * scale` pixels wide (plus another `pad`
    of white) separates column `divider_after` from the next, like the paper's line after the
    training image. If row_labels is given, a left margin holds each label in black text,
    vertically centred on its row.
    """
    cells = _grid_cells(rows, row_labels, divider_after, scale, pad)
    n, h, w = cells[0].shape[:3]
    ch, cw = h * scale, w * scale
    n_rows = len(cells)
    extra = 0 if divider_after is None else _divider_width(scale) + pad

    margin = 0
    if row_labels is not None:
        # Text about a quarter of a cell tall reads like the paper's labels at any scale.
        font = _label_font(max(10, ch // 4))
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        boxes = [measure.textbbox((0, 0), label, font=font) for label in row_labels]
        margin = max(b[2] - b[0] for b in boxes) + 2 * max(pad, 2)

    height = pad + n_rows * (ch + pad)
    width = margin + pad + n * (cw + pad) + extra
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)

    for r, row in enumerate(cells):
        big = row.repeat(scale, axis=1).repeat(scale, axis=2)
        y = pad + r * (ch + pad)
        for j in range(n):
            x = margin + pad + j * (cw + pad)
            if divider_after is not None and j > divider_after:
                x += extra
            canvas[y : y + ch, x : x + cw] = big[j]

    if divider_after is not None:
        x = margin + pad + (divider_after + 1) * (cw + pad)
        canvas[pad : height - pad, x : x + _divider_width(scale)] = DIVIDER_RED

    if row_labels is not None:
        canvas = _draw_row_labels(canvas, row_labels, boxes, font, cell_height=ch, pad=pad)
    return canvas


def _grid_cells(
    rows: Sequence[torch.Tensor],
    row_labels: Sequence[str] | None,
    divider_after: int | None,
    scale: int,
    pad: int,
) -> list[np.ndarray]:
    """image_grid's arguments checked (ValueError naming the bad one), and its rows as uint8 RGB
    arrays (N, H, W, 3) of one shared N, H and W."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if len(rows) == 0:
        raise ValueError("rows must hold at least one row, got 0")
    cells = [to_uint8_rgb(row) for row in rows]
    n, h, w = cells[0].shape[:3]
    for r, c in enumerate(cells):
        if c.shape[:3] != (n, h, w):
            raise ValueError(
                f"all rows must have the same (N, H, W); row 0 has {(n, h, w)}, "
                f"row {r} has {c.shape[:3]}"
            )
    if n == 0:
        raise ValueError("rows must hold at least one image each, got N=0")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(
            f"row_labels must have one label per row ({len(rows)}), got {len(row_labels)}"
        )
    if divider_after is not None and not 0 <= divider_after < n - 1:
        raise ValueError(
            f"divider_after must be in [0, {n - 2}] for {n} columns, got {divider_after}"
        )
    return cells


def _draw_row_labels(
    canvas: np.ndarray,
    row_labels: Sequence[str],
    boxes: Sequence[tuple[int, int, int, int]],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    *,
    cell_height: int,
    pad: int,
) -> np.ndarray:
    """A copy of the grid with each label (its inked box measured in `boxes`) in black in the
    left margin, vertically centred on its row of cells."""
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for r, (label, box) in enumerate(zip(row_labels, boxes, strict=True)):
        centre = pad + r * (cell_height + pad) + cell_height / 2
        # textbbox includes the font's top bearing, so centre the inked box, not the origin.
        top = centre - (box[3] - box[1]) / 2 - box[1]
        draw.text((max(pad, 2) - box[0], top), label, fill=BLACK, font=font)
    return np.asarray(img).copy()


def colormap_maps(maps: torch.Tensor, cmap: str = "winter") -> torch.Tensor:
    """(N, H, W) float maps -> (N, 3, H, W) float in [0, 1], on the same device as `maps`.

    Each map is normalised to [0, 1] by its own min and max (a flat map becomes all 0), then
    coloured with the matplotlib colour map `cmap`; the default 'winter' runs blue -> green,
    the look of the paper's figure 4.
    """
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a torch.Tensor, got {type(maps).__name__}")
    if maps.dim() != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {tuple(maps.shape)}")
    try:
        colour_map = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colour map {cmap!r}") from None
    x = torch.nan_to_num(maps.detach().to("cpu", torch.float64), nan=0.0)
    lo = x.amin(dim=(1, 2), keepdim=True)
    span = x.amax(dim=(1, 2), keepdim=True) - lo
    # Dividing by a zero span would give NaN; a flat map carries no contrast, so map it to 0.
    norm = torch.where(span > 0, (x - lo) / span.clamp_min(1e-300), torch.zeros_like(x))
    rgba = colour_map(norm.numpy())
    rgb = torch.from_numpy(rgba[..., :3]).to(torch.float32).permute(0, 3, 1, 2)
    return rgb.contiguous().to(maps.device)


def hidden_layer_grid(
    inputs: torch.Tensor,
    layer_maps: Sequence[torch.Tensor],
    *,
    scale: int = 3,
    pad: int = 2,
    layer_notes: Sequence[str] | None = None,
) -> np.ndarray:
    """The paper's figure 4 as one (H, W, 3) uint8 array.

    One column per input image. The top row holds `inputs` ((N, C, H, W) in [0, 1]) in grey;
    then one row per entry of layer_maps (each (N, H, W), e.g. a layer's channel mean), coloured
    with colormap_maps. The last entry is the network output and is drawn in grey, clipped to
    [0, 1], instead. Rows are labelled 'input', 'layer 1', ..., 'output'; `layer_notes[i]`, if
    given, follows the label of layer i + 1 (e.g. its live and input-dependent shares).
    """
    if len(layer_maps) == 0:
        raise ValueError("layer_maps must hold at least the output, got 0 entries")
    for i, m in enumerate(layer_maps):
        if not isinstance(m, torch.Tensor) or m.dim() != 3:
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"layer_maps[{i}] must be (N, H, W), got {shape}")
    rows = [inputs]
    rows += [colormap_maps(m) for m in layer_maps[:-1]]
    rows.append(layer_maps[-1].unsqueeze(1))
    notes = list(layer_notes or [])
    layers = [
        f"layer {i} {notes[i - 1]}" if i <= len(notes) else f"layer {i}"
        for i in range(1, len(layer_maps))
    ]
    labels = ["input", *layers, "output"]
    return image_grid(rows, row_labels=labels, divider_after=None, scale=scale, pad=pad)


def save_png(image: np.ndarray, path: str | os.PathLike) -> pathlib.Path:
    """Write a uint8 (H, W, 3) array as a PNG, creating parent folders; return the path."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 numpy array, got {kind}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path
