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
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from PIL import Image, ImageDraw, ImageFont

from identity_crisis.jsonio import atomic_path
from identity_crisis.verdict import VERDICT_COLOURS
from lightning_modules.metrics import DEFAULT_VERDICT_THRESHOLD, VERDICTS, is_flat

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
DIVIDER_RED = (220, 20, 40)
DIVIDER_RED_HEX = "#dc1428"
# Hidden maps run blue -> green, the look of the paper's figure 4.
HIDDEN_CMAP = "winter"


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


def colormap_maps(maps: torch.Tensor, cmap: str = HIDDEN_CMAP) -> torch.Tensor:
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
    rows = _hidden_rows(inputs, layer_maps)
    notes = list(layer_notes or [])
    layers = [
        f"layer {i} {notes[i - 1]}" if i <= len(notes) else f"layer {i}"
        for i in range(1, len(layer_maps))
    ]
    labels = ["input", *layers, "output"]
    return image_grid(rows, row_labels=labels, divider_after=None, scale=scale, pad=pad)


def _hidden_rows(inputs: torch.Tensor, layer_maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The rows of the hidden-map grid: the inputs, each hidden map coloured, the output in grey."""
    if len(layer_maps) == 0:
        raise ValueError("layer_maps must hold at least the output, got 0 entries")
    for i, m in enumerate(layer_maps):
        if not isinstance(m, torch.Tensor) or m.dim() != 3:
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"layer_maps[{i}] must be (N, H, W), got {shape}")
    rows = [inputs]
    rows += [colormap_maps(m) for m in layer_maps[:-1]]
    rows.append(layer_maps[-1].unsqueeze(1))
    return rows


def save_png(image: np.ndarray, path: str | os.PathLike) -> pathlib.Path:
    """Write a uint8 (H, W, 3) array as a PNG, creating parent folders; return the path."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 numpy array, got {kind}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    path = pathlib.Path(path)
    with atomic_path(path) as tmp:  # no half a panel on a full disk
        Image.fromarray(image).save(tmp, format="PNG")
    return path


# --- labelled figures ----------------------------------------------------------------------------
# The run-folder PNGs must say what they show without the code at hand: the grids above, drawn 1:1
# (one figure pixel per grid pixel, so cells stay sharp) inside a matplotlib figure that adds the
# title, the labels, the scores and the colour scales. Sizes are in pixels at this resolution.
FIGURE_DPI = 100
TITLE_PT, LABEL_PT, NOTE_PT, SCORE_PT = 12, 10, 8.5, 7.5
# An output below this everywhere shows as black cells; its label says so, or a reader takes the
# black row for a drawing error (the untrained deep net's output is about 0).
NEAR_BLACK = 0.1


def fit_status(fitted: bool | None, final_loss: float | None) -> str:
    """'fitted, train MSE 1.2e-08' / 'NOT fitted, train MSE 0.034': the run's fit in the title."""
    loss = "" if final_loss is None else f", train MSE {final_loss:.2g}"
    if fitted is None:
        return f"fit unknown{loss}"
    return ("fitted" if fitted else "NOT fitted") + loss


def score_label(identity_corr: float, constant_corr: float, flat: bool = False) -> str:
    """The line under one output: its correlation with its input and with the training image."""
    if flat:
        # metrics counts a flat output's correlations as 0; printing 0.00 would read as measured.
        return "flat output"
    return f"id {identity_corr:.2f} / c {constant_corr:.2f}"


def _value(v: float) -> str:
    return f"{v:.2g}"


def layer_state(maps: torch.Tensor) -> str:
    """'dead: all 0', 'flat' (every map constant over the image, metrics.is_flat) or 'flat for k
    of N inputs'; '' for a layer whose maps show structure."""
    if bool((maps == 0).all()):
        return "dead: all 0"
    flat = is_flat(maps)
    if bool(flat.all()):
        return "flat"
    if bool(flat.any()):
        return f"flat for {int(flat.sum())} of {len(flat)} inputs"
    return ""


def state_line(maps: torch.Tensor) -> str:
    """A layer's state and value range: 'dead: all 0', 'flat at 0.3', 'values 0 to 0.15', ...
    (the colours are scaled per map, so the range is the figure's only absolute scale)."""
    state = layer_state(maps)
    if state.startswith("dead"):
        return state
    lo, hi = _value(float(maps.min())), _value(float(maps.max()))
    if lo == hi:
        return (
            f"flat at {lo}" if state == "flat" else ", ".join(filter(None, [state, f"about {lo}"]))
        )
    return ", ".join(filter(None, [state, f"values {lo} to {hi}"]))


def output_note(output: torch.Tensor) -> str:
    """What the grey output row shows: its state and range, and why it is black when it is."""
    hi = float(output.max())
    if hi < NEAR_BLACK and not layer_state(output).startswith("dead"):
        # Cells show values clipped to [0, 1]: an output about 0 or below is a black row, which
        # a reader would otherwise take for a drawing error (the untrained deep net's output).
        lo = float(output.min())
        return f"near 0 ({_value(lo)} to {_value(hi)}),\nso it shows black"
    return state_line(output)


def hidden_row_labels(
    layer_maps: Sequence[torch.Tensor], layer_notes: Sequence[str] | None = None
) -> list[str]:
    """The label of each row of the hidden-map figure: 'input'; per hidden layer its name, its
    note (e.g. live and input shares) and its state_line; 'output' and its output_note."""
    notes = list(layer_notes or [])
    labels = ["input"]
    for i, maps in enumerate(layer_maps[:-1], start=1):
        lines = [f"layer {i}", notes[i - 1] if i <= len(notes) else "", state_line(maps)]
        labels.append("\n".join(filter(None, lines)))
    labels.append(f"output\n{output_note(layer_maps[-1])}")
    return labels


def _measure(text: str, size: float) -> float:
    """Width in figure pixels of the widest line of `text` at `size` points."""
    renderer = RendererAgg(1, 1, FIGURE_DPI)
    prop = FontProperties(size=size)
    return max(
        renderer.get_text_width_height_descent(line, prop, ismath=False)[0]
        for line in text.split("\n")
    )


def _pixel_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(round(width) / FIGURE_DPI, round(height) / FIGURE_DPI), dpi=FIGURE_DPI)
    FigureCanvasAgg(fig)
    return fig


def _pixel_axes(fig: Figure, left: float, top: float, width: float, height: float, **kwargs):
    """Axes at a box given in pixels from the figure's top-left corner."""
    fw, fh = fig.bbox.width, fig.bbox.height
    box = [left / fw, 1 - (top + height) / fh, width / fw, height / fh]
    return fig.add_axes(box, **kwargs)


def _grid_axes(fig: Figure, grid: np.ndarray, left: float, top: float):
    """The grid drawn 1:1 with its top-left pixel at (left, top), and blank axes over it whose
    data coordinates are the grid's pixels, to put text on."""
    h, w = grid.shape[:2]
    # figimage copies pixels as they are; imshow would resample them, several times slower.
    fig.figimage(grid, xo=round(left), yo=round(fig.bbox.height - top - h), origin="upper")
    ax = _pixel_axes(fig, round(left), round(top), w, h)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    return ax


def figure_rgb(fig: Figure) -> np.ndarray:
    """The figure rendered by Agg as a (H, W, 3) uint8 array, for save_png and W&B."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _cell_centres(n: int, size: int, scale: int, pad: int, divider_after: int | None) -> list:
    """Centres of image_grid's cells along one axis (columns when a divider is given)."""
    extra = 0 if divider_after is None else _divider_width(scale) + pad
    return [
        pad
        + j * (size + pad)
        + size / 2
        + (extra if divider_after is not None and j > divider_after else 0)
        for j in range(n)
    ]


def _fig_text(fig: Figure, x: float, y: float, text: str, **kwargs):
    """Text at (x, y) pixels from the figure's top-left corner."""
    return fig.text(x / fig.bbox.width, 1 - y / fig.bbox.height, text, **kwargs)


def _scores_of(scores: dict, i: int) -> tuple[str, str]:
    """Probe i's line under its output and that line's colour (by its verdict)."""
    flat = bool(scores["flat"][i]) if "flat" in scores else False
    label = score_label(float(scores["identity_corr"][i]), float(scores["constant_corr"][i]), flat)
    return label, VERDICT_COLOURS[VERDICTS[int(scores["verdict"][i])]]


def probe_panel_key(threshold: float) -> str:
    """The panel's footnote: what the divider, the rows and the scores mean."""
    return (
        "Red bar: the training image (left) | test probes the net never trained on (right). "
        "Top row: the inputs; bottom row: the net's outputs, clipped to [0, 1].\n"
        "Under each output: id = its correlation with its own input (identity), "
        "c = its correlation with the training image (constant).\n"
        "Score colours: green = judged identity, red = judged constant, grey = neither "
        f"(threshold {threshold:g})."
    )


def probe_panel_figure(
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    scores: dict,
    *,
    title: str,
    threshold: float = DEFAULT_VERDICT_THRESHOLD,
    scale: int = 3,
    pad: int = 2,
) -> Figure:
    """The probe panel: `title` on top, the inputs over the outputs (clipped to [0, 1]) with the
    training image (column 0) behind the red divider, each output's scores under it (`scores`
    as metrics.per_image_scores gives them), and a key at the bottom."""
    grid = image_grid([inputs, outputs.clamp(0, 1)], divider_after=0, scale=scale, pad=pad)
    n, ch, cw = inputs.shape[0], inputs.shape[2] * scale, inputs.shape[3] * scale
    key = probe_panel_key(threshold)
    trained = (
        "training image" if _measure("training image", NOTE_PT) <= cw + 8 else "training\nimage"
    )
    left = max(_measure(r, LABEL_PT) for r in ("inputs", "outputs")) + 16
    top = 10 + 20 * (title.count("\n") + 1) + 12 + 13 * (trained.count("\n") + 1)
    bottom = 20 + 14 * (key.count("\n") + 1) + 10
    width = max(left + grid.shape[1], _measure(key, NOTE_PT) + 20, _measure(title, TITLE_PT)) + 12
    fig = _pixel_figure(width, top + grid.shape[0] + bottom)
    ax = _grid_axes(fig, grid, left, top)
    _fig_text(fig, 10, 8, title, fontsize=TITLE_PT, weight="bold", va="top")
    columns = _cell_centres(n, cw, scale, pad, divider_after=0)
    above = dict(fontsize=NOTE_PT, ha="center", va="bottom", clip_on=False)
    ax.text(columns[0], -4, trained, color=DIVIDER_RED_HEX, weight="bold", **above)
    middle = (columns[1] + columns[-1]) / 2
    ax.text(middle, -4, "test probes (never trained on)", color="black", **above)
    for r, name in enumerate(("inputs", "outputs")):
        y = pad + r * (ch + pad) + ch / 2
        ax.text(-10, y, name, fontsize=LABEL_PT, ha="right", va="center", clip_on=False)
    for j, x in enumerate(columns):
        label, colour = _scores_of(scores, j)
        ax.text(
            x,
            grid.shape[0] + 3,
            label,
            fontsize=SCORE_PT,
            color=colour,
            ha="center",
            va="top",
            clip_on=False,
        )
    _fig_text(fig, 10, fig.bbox.height - 8, key, fontsize=NOTE_PT, va="bottom", color="#333333")
    return fig


def _colour_scale(fig: Figure, box: tuple, cmap: str, ticks: dict, label: str) -> None:
    """A horizontal colour bar at `box` (pixels: left, top, width, height), its label above it,
    `ticks` ({value: text}) below."""
    cax = _pixel_axes(fig, *box, label="<colorbar>")
    bar = fig.colorbar(
        ScalarMappable(Normalize(0, 1), cmap=cmap), cax=cax, orientation="horizontal"
    )
    bar.set_ticks(list(ticks), labels=list(ticks.values()), fontsize=NOTE_PT)
    cax.xaxis.set_label_position("top")
    cax.set_xlabel(label, fontsize=NOTE_PT)


def hidden_maps_figure(
    inputs: torch.Tensor,
    layer_maps: Sequence[torch.Tensor],
    *,
    title: str,
    layer_notes: Sequence[str] | None = None,
    scale: int = 3,
    pad: int = 2,
) -> Figure:
    """hidden_layer_grid's rows in a figure: `title` on top (say whether the net is at random init
    or trained), each row labelled by hidden_row_labels, and the colour scales of the layer maps
    and of the grey input and output rows underneath."""
    grid = image_grid(_hidden_rows(inputs, layer_maps), divider_after=None, scale=scale, pad=pad)
    labels = hidden_row_labels(layer_maps, layer_notes)
    ch = inputs.shape[2] * scale
    left = max(_measure(label, NOTE_PT) for label in labels) + 18
    top = 10 + 20 * (title.count("\n") + 1) + 10
    bar_width = max(320.0, (grid.shape[1] - 40) / 2)
    width = max(left + grid.shape[1], left + 2 * bar_width + 40, _measure(title, TITLE_PT)) + 12
    fig = _pixel_figure(width, top + grid.shape[0] + 100)
    ax = _grid_axes(fig, grid, left, top)
    _fig_text(fig, 10, 8, title, fontsize=TITLE_PT, weight="bold", va="top")
    for r, label in enumerate(labels):
        y = pad + r * (ch + pad) + ch / 2
        ax.text(
            -10,
            y,
            label,
            fontsize=NOTE_PT,
            ha="right",
            va="center",
            linespacing=1.15,
            clip_on=False,
        )
    bar_top = top + grid.shape[0] + 46
    _colour_scale(
        fig,
        (left, bar_top, bar_width, 12),
        HIDDEN_CMAP,
        {0: "map min", 1: "map max"},
        "layers: channel mean, each map scaled\nfrom its own min (blue) to its own max (green)",
    )
    _colour_scale(
        fig,
        (left + bar_width + 40, bar_top, bar_width, 12),
        "gray",
        {0: "0", 0.5: "0.5", 1: "1"},
        "input and output: pixel value,\nclipped to [0, 1] (0 and below are black)",
    )
    return fig
