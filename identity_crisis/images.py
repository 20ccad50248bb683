"""Image panels for the Identity Crisis figures.

Turns batches of image tensors into uint8 RGB arrays: grids of inputs and outputs
(torchvision's make_grid) with the paper's red divider after the training image (figures 2-3),
and per-layer hidden maps in the blue-green 'winter' colour map (figure 4). Each grid is a
(H, W, 3) uint8 array, so it can be saved as a PNG or logged to W&B as is. The run folder's
panels show these grids in matplotlib figures that add the title, labels, scores and colour
scales (probe_panel_figure, hidden_maps_figure; figure_rgb renders them to such an array).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch.nn import functional as F
from torchvision.utils import make_grid

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
    n, h, w = cells.shape[1:4]
    big = torch.from_numpy(cells).flatten(0, 1).permute(0, 3, 1, 2)
    big = big.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    if len(big) == 1:
        # make_grid hands a lone image back without its frame.
        grid = F.pad(big[0], (pad, pad, pad, pad), value=255)
    else:
        grid = make_grid(big, nrow=n, padding=pad, pad_value=255)
    canvas = grid.permute(1, 2, 0).numpy()
    if divider_after is not None:
        canvas = _insert_divider(canvas, pad + (divider_after + 1) * (w * scale + pad), scale, pad)
    if row_labels is not None:
        canvas = _draw_row_labels(canvas, row_labels, cell_height=h * scale, pad=pad)
    return np.ascontiguousarray(canvas)


def _insert_divider(canvas: np.ndarray, x: int, scale: int, pad: int) -> np.ndarray:
    """The grid with a red bar, then `pad` white, slid in at column x (a gap between cells)."""
    strip = np.full((canvas.shape[0], _divider_width(scale) + pad, 3), 255, dtype=np.uint8)
    strip[pad : canvas.shape[0] - pad, : _divider_width(scale)] = DIVIDER_RED
    return np.concatenate([canvas[:, :x], strip, canvas[:, x:]], axis=1)


def _grid_cells(
    rows: Sequence[torch.Tensor],
    row_labels: Sequence[str] | None,
    divider_after: int | None,
    scale: int,
    pad: int,
) -> np.ndarray:
    """image_grid's arguments checked (ValueError naming the bad one), and its rows as one
    uint8 RGB array (rows, N, H, W, 3)."""
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
    return np.stack(cells)


def _draw_row_labels(
    canvas: np.ndarray, row_labels: Sequence[str], *, cell_height: int, pad: int
) -> np.ndarray:
    """The grid behind a white left margin that holds each label in black, vertically centred
    on its row of cells."""
    # Text about a quarter of a cell tall reads like the paper's labels at any scale.
    font = _label_font(max(10, cell_height // 4))
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [draw.textbbox((0, 0), label, font=font) for label in row_labels]
    margin = max(b[2] - b[0] for b in boxes) + 2 * max(pad, 2)
    img = Image.new("RGB", (margin + canvas.shape[1], canvas.shape[0]), WHITE)
    img.paste(Image.fromarray(canvas), (margin, 0))
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
# The run-folder PNGs must say what they show without the code at hand: the grids above, shown in a
# matplotlib figure whose layout engine places the title, the labels, the scores and the colour
# scales around them.
FIGURE_DPI = 100
TITLE_PT, LABEL_PT, NOTE_PT, SCORE_PT = 12, 10, 8.5, 7.5
# The white kept around a figure's content.
EDGE_INCHES = 0.1
# The narrowest a grid is drawn, in pixels: the room the probe panel's key needs, and the hidden-map
# figure's two colour-bar labels side by side.
PROBE_MIN_WIDTH, HIDDEN_MIN_WIDTH = 900, 560
# A colour bar's thickness.
BAR_PX = 14
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


def _cell_centres(count: int, size: int, pad: int, after: int | None = None, gap: int = 0):
    """Centres, in grid pixels, of image_grid's cells along one axis; those past `after` sit
    `gap` further on (behind the divider)."""
    shift = [gap if after is not None and i > after else 0 for i in range(count)]
    return [pad + i * (size + pad) + (size - 1) / 2 + shift[i] for i in range(count)]


def _grid_figure(
    grid: np.ndarray, title: str, min_width: int, bars: int = 0
) -> tuple[Figure, Axes, list[Axes]]:
    """A figure showing `grid` under `title`, its ticks ready to carry the row and column labels,
    and `bars` axes side by side under it for colour bars; _fit_size then sizes it to draw the
    grid 1:1, or `min_width` pixels wide if that is wider."""
    h, w = grid.shape[:2]
    width = max(w, min_width)
    # A first guess at the room the labels take; _fit_size corrects it.
    size = ((width + 200) / FIGURE_DPI, (h * width / w + 200) / FIGURE_DPI)
    fig = Figure(figsize=size, dpi=FIGURE_DPI)
    fig.set_layout_engine("constrained", w_pad=EDGE_INCHES, h_pad=EDGE_INCHES)
    FigureCanvasAgg(fig)
    # Rows share the height by ratio: a bar BAR_PX thick at the scale the grid will be drawn.
    bar = BAR_PX * w / width
    rows = fig.add_gridspec(1 + (bars > 0), max(bars, 1), height_ratios=[h, bar][: 1 + bars])
    ax = fig.add_subplot(rows[0, :])
    # The image fills its axes (aspect "auto"), so the labels always sit outside them and the
    # layout's margins do not depend on the size _fit_size picks. Nearest keeps the cells' pixels
    # sharp where a narrow grid is drawn larger.
    ax.imshow(grid, interpolation="nearest", aspect="auto")
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    fig.suptitle(title, x=0.01, ha="left", fontsize=TITLE_PT, weight="bold")
    return fig, ax, [fig.add_subplot(rows[1, i], label="<colorbar>") for i in range(bars)]


def _fit_size(fig: Figure, ax: Axes, min_width: int) -> Figure:
    """The figure at the size where its image is drawn with square pixels, 1:1 or `min_width`
    pixels wide: the panels of every run alike, whatever their labels."""
    h, w = ax.images[0].get_size()
    width = max(w, min_width)
    # The grid's row gets only its share of a change in the figure's height; the bars the rest.
    ratios = ax.get_subplotspec().get_gridspec().get_height_ratios() or [1]
    for _ in range(3):  # a second pass only where a wide key overhangs a narrow image
        fig.draw_without_rendering()
        box = ax.get_position().transformed(fig.transFigure)
        dx, dy = width - box.width, (width * h / w - box.height) * sum(ratios) / ratios[0]
        if max(abs(dx), abs(dy)) < 0.5:
            break
        fig.set_size_inches(fig.get_figwidth() + dx / fig.dpi, fig.get_figheight() + dy / fig.dpi)
    return fig


def figure_rgb(fig: Figure) -> np.ndarray:
    """The figure rendered by Agg as a (H, W, 3) uint8 array, for save_png and W&B."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


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
    fig, ax, _ = _grid_figure(grid, title, PROBE_MIN_WIDTH)
    ch, cw = inputs.shape[2] * scale, inputs.shape[3] * scale
    ax.set_yticks(_cell_centres(2, ch, pad), ["inputs", "outputs"], fontsize=LABEL_PT)
    columns = _cell_centres(len(inputs), cw, pad, after=0, gap=_divider_width(scale) + pad)
    under = [_scores_of(scores, j) for j in range(len(inputs))]
    ax.set_xticks(columns, [label for label, _ in under], fontsize=SCORE_PT)
    for tick, (_, colour) in zip(ax.get_xticklabels(), under, strict=True):
        tick.set_color(colour)
    above = ax.secondary_xaxis("top")
    probes = (columns[1] + columns[-1]) / 2
    headers = ["training\nimage", "test probes (never trained on)"]
    above.set_xticks([columns[0], probes], headers, fontsize=NOTE_PT)
    above.tick_params(length=0)
    above.spines[:].set_visible(False)
    above.get_xticklabels()[0].set(color=DIVIDER_RED_HEX, weight="bold")
    key = probe_panel_key(threshold)
    ax.set_xlabel(key, loc="left", fontsize=NOTE_PT, color="#333333", labelpad=10)
    return _fit_size(fig, ax, PROBE_MIN_WIDTH)


def _colour_scale(fig: Figure, cax: Axes, cmap: str, ticks: dict, label: str) -> None:
    """A horizontal colour bar in `cax`, `label` above it and `ticks` ({value: text}) below."""
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
    fig, ax, (maps_bar, grey_bar) = _grid_figure(grid, title, HIDDEN_MIN_WIDTH, bars=2)
    labels = hidden_row_labels(layer_maps, layer_notes)
    rows = _cell_centres(len(labels), inputs.shape[2] * scale, pad)
    ax.set_yticks(rows, labels, fontsize=NOTE_PT, linespacing=1.15)
    ax.set_xticks([])
    _colour_scale(
        fig,
        maps_bar,
        HIDDEN_CMAP,
        {0: "map min", 1: "map max"},
        "layers: channel mean, each map scaled\nfrom its own min (blue) to its own max (green)",
    )
    _colour_scale(
        fig,
        grey_bar,
        "gray",
        {0: "0", 0.5: "0.5", 1: "1"},
        "input and output: pixel value,\nclipped to [0, 1] (0 and below are black)",
    )
    return _fit_size(fig, ax, HIDDEN_MIN_WIDTH)
