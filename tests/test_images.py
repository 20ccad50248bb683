"""Pixel-level tests for identity_crisis.images, and the labelled figures ProbePanels writes."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.collections import QuadMesh
from matplotlib.text import Text
from PIL import Image

from identity_crisis import run_folder
from identity_crisis.callbacks import ProbePanels
from identity_crisis.images import (
    colormap_maps,
    figure_rgb,
    fit_status,
    hidden_layer_grid,
    hidden_maps_figure,
    hidden_row_labels,
    image_grid,
    probe_panel_figure,
    save_png,
    score_label,
    to_uint8_rgb,
)
from identity_crisis.verdict import VERDICT_COLOURS
from lightning_modules import CNN
from lightning_modules.metrics import per_image_scores


def _is_red(px: np.ndarray) -> np.ndarray:
    px = px.astype(int)
    return (px[..., 0] > 180) & (px[..., 1] < 80) & (px[..., 2] < 80)


# --- to_uint8_rgb -------------------------------------------------------------------------


def test_to_uint8_rgb_maps_range_clips_and_replicates_grey():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5]).reshape(1, 1, 1, 5)
    out = to_uint8_rgb(x)
    assert out.dtype == np.uint8
    assert out.shape == (1, 1, 5, 3)
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_to_uint8_rgb_keeps_colour_channels_apart():
    x = torch.zeros(2, 3, 4, 4)
    x[:, 0] = 1.0  # pure red
    out = to_uint8_rgb(x)
    assert out.shape == (2, 4, 4, 3)
    assert (out[..., 0] == 255).all() and (out[..., 1:] == 0).all()


def test_to_uint8_rgb_nan_becomes_black():
    out = to_uint8_rgb(torch.full((1, 1, 2, 2), float("nan")))
    assert (out == 0).all()


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 2, 28, 28), (1, 1, 1, 28, 28)])
def test_to_uint8_rgb_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"got shape \(" + ", ".join(map(str, shape))):
        to_uint8_rgb(torch.zeros(shape))


# --- image_grid -------------------------------------------------------------------------


@pytest.mark.parametrize("divider_after", [None, 0, 2])
def test_image_grid_size_formula(divider_after):
    n, n_rows, h, w, scale, pad = 4, 3, 5, 7, 2, 3
    rows = [torch.zeros(n, 1, h, w) for _ in range(n_rows)]
    out = image_grid(rows, divider_after=divider_after, scale=scale, pad=pad)
    divider = 0 if divider_after is None else 2 * scale + pad
    assert out.dtype == np.uint8
    assert out.shape == (
        pad + n_rows * (h * scale + pad),
        pad + n * (w * scale + pad) + divider,
        3,
    )


def test_image_grid_places_white_cell_and_padding():
    n, h, w, scale, pad = 3, 4, 4, 3, 2
    rows = [torch.zeros(n, 1, h, w), torch.zeros(n, 1, h, w)]
    rows[1][2] = 1.0  # row 1, column 2 is white
    out = image_grid(rows, divider_after=None, scale=scale, pad=pad)
    ch, cw = h * scale, w * scale
    y, x = pad + 1 * (ch + pad), pad + 2 * (cw + pad)
    assert (out[y : y + ch, x : x + cw] == 255).all()
    # Its neighbours are black cells, the gaps and frame are white.
    assert (out[y : y + ch, x - pad - cw : x - pad] == 0).all()
    assert (out[y - pad - ch : y - pad, x : x + cw] == 0).all()
    assert (out[:pad] == 255).all() and (out[:, :pad] == 255).all()
    assert (out[y : y + ch, x - pad : x] == 255).all()


def test_image_grid_upscales_nearest():
    img = torch.zeros(2, 1, 2, 2)
    img[0, 0, 0, 1] = 1.0  # top-right source pixel
    out = image_grid([img], divider_after=None, scale=4, pad=0)
    assert (out[0:4, 4:8] == 255).all()
    assert (out[0:4, 0:4] == 0).all() and (out[4:8, :8] == 0).all()


def test_image_grid_red_divider_between_first_and_second_column():
    n, h, w, scale, pad = 3, 4, 4, 3, 2
    rows = [torch.zeros(n, 1, h, w)]
    out = image_grid(rows, divider_after=0, scale=scale, pad=pad)
    mid = out[pad + h * scale // 2]  # one scan line through the cells
    red_x = np.flatnonzero(_is_red(mid))
    assert len(red_x) == 2 * scale
    assert np.all(np.diff(red_x) == 1)
    col0_end = pad + w * scale  # exclusive
    col1_start = red_x[-1] + 1 + pad
    assert red_x[0] == col0_end + pad
    assert (mid[pad:col0_end] == 0).all()  # column 0 is left of the bar, untouched
    assert (mid[col1_start : col1_start + w * scale] == 0).all()  # column 1 is right of it
    # The bar runs the full height of the cell area, not just one line.
    assert _is_red(out[pad : out.shape[0] - pad, red_x[0]]).all()
    # Only one bar.
    assert _is_red(out).any(axis=0).sum() == 2 * scale


def test_image_grid_colour_rows_and_mixed_channels():
    grey = torch.full((2, 1, 3, 3), 0.5)
    red = torch.zeros(2, 3, 3, 3)
    red[:, 0] = 1.0
    out = image_grid([grey, red], divider_after=None, scale=1, pad=1)
    np.testing.assert_array_equal(out[1, 1], [128, 128, 128])
    np.testing.assert_array_equal(out[5, 1], [255, 0, 0])


def test_image_grid_labels_in_left_margin_centred_on_rows():
    n, h, w, scale, pad = 2, 10, 10, 3, 2
    rows = [torch.ones(n, 1, h, w) for _ in range(3)]  # white cells: only text is dark
    plain = image_grid(rows, divider_after=None, scale=scale, pad=pad)
    labelled = image_grid(
        rows, row_labels=["input", "layer 1", "output"], divider_after=None, scale=scale, pad=pad
    )
    margin = labelled.shape[1] - plain.shape[1]
    assert margin > 0
    assert labelled.shape[0] == plain.shape[0]
    np.testing.assert_array_equal(labelled[:, margin:], plain)  # cells unmoved, untouched
    dark = labelled.max(axis=2) < 100
    assert not dark[:, margin:].any()
    ch = h * scale
    for r in range(3):
        top = pad + r * (ch + pad)
        ys = np.flatnonzero(dark[top : top + ch, :margin].any(axis=1))
        assert len(ys) > 0, f"no text on row {r}"
        assert abs((ys.min() + ys.max()) / 2 - ch / 2) <= 2  # vertically centred
    # Text is black (anti-aliased onto white, so grey edges and near-0 cores), not coloured.
    text = labelled[:, :margin].astype(int)
    assert text.min() <= 10
    assert (text[..., 0] == text[..., 1]).all() and (text[..., 1] == text[..., 2]).all()


def test_image_grid_empty_label_is_allowed():
    rows = [torch.ones(2, 1, 4, 4)] * 2
    out = image_grid(rows, row_labels=["", "x"], divider_after=None)
    assert out.dtype == np.uint8


def test_image_grid_rejects_bad_inputs():
    a, b = torch.zeros(3, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"row 1 has \(2, 4, 4\)"):
        image_grid([a, b])
    with pytest.raises(ValueError, match=r"row 1 has \(3, 5, 4\)"):
        image_grid([a, torch.zeros(3, 1, 5, 4)])
    with pytest.raises(ValueError, match="scale must be >= 1, got 0"):
        image_grid([a], scale=0)
    with pytest.raises(ValueError, match="pad must be >= 0, got -1"):
        image_grid([a], pad=-1)
    with pytest.raises(ValueError, match="got 5"):
        image_grid([a], divider_after=5)
    with pytest.raises(ValueError, match="got 2"):  # the last column has no neighbour
        image_grid([a], divider_after=2)
    with pytest.raises(ValueError, match=r"row_labels .* got 1"):
        image_grid([a, a], row_labels=["only one"])
    with pytest.raises(ValueError, match="got 0"):
        image_grid([])
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 4\)"):
        image_grid([torch.zeros(3, 4, 4)])


# --- colormap_maps ------------------------------------------------------------------------


def test_colormap_maps_winter_ramp_blue_to_green():
    ramp = torch.linspace(-3.0, 7.0, 11).reshape(1, 1, 11)
    out = colormap_maps(ramp)
    assert out.shape == (1, 3, 1, 11)
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    lo, hi = out[0, :, 0, 0], out[0, :, 0, -1]
    torch.testing.assert_close(lo, torch.tensor([0.0, 0.0, 1.0]))  # blue at the minimum
    torch.testing.assert_close(hi, torch.tensor([0.0, 1.0, 0.5]))  # green at the maximum
    assert hi[1] > hi[0] and hi[1] > hi[2]
    assert torch.all(out[0, 1, 0].diff() >= 0)  # green rises along the ramp


def test_colormap_maps_normalises_each_map_on_its_own():
    base = torch.rand(5, 6)
    maps = torch.stack([base, base * 100 + 42, base * 1e-3])
    out = colormap_maps(maps)
    torch.testing.assert_close(out[1], out[0])
    torch.testing.assert_close(out[2], out[0])


def test_colormap_maps_flat_map_is_min_colour_without_nan():
    out = colormap_maps(torch.full((2, 4, 4), 3.7))
    assert torch.isfinite(out).all()
    blue = torch.tensor([0.0, 0.0, 1.0]).reshape(3, 1, 1)
    torch.testing.assert_close(out[0], blue.expand(3, 4, 4))


def test_colormap_maps_other_cmap_and_bad_inputs():
    out = colormap_maps(torch.arange(4.0).reshape(1, 2, 2), cmap="gray")
    torch.testing.assert_close(out[0, 0], out[0, 1])
    with pytest.raises(ValueError, match="no_such_cmap"):
        colormap_maps(torch.zeros(1, 2, 2), cmap="no_such_cmap")
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 2, 2\)"):
        colormap_maps(torch.zeros(1, 1, 2, 2))


# --- hidden_layer_grid --------------------------------------------------------------------


def test_hidden_layer_grid_rows_colours_and_grey_output():
    n, h, w, scale, pad = 3, 6, 6, 2, 1
    inputs = torch.rand(n, 1, h, w)
    hidden = [torch.randn(n, h, w) for _ in range(4)]
    output = torch.rand(n, h, w) * 2 - 0.5  # out of range on purpose
    out = hidden_layer_grid(inputs, [*hidden, output], scale=scale, pad=pad)

    ch, cw = h * scale, w * scale
    n_rows = 1 + len(hidden) + 1
    assert out.shape[0] == pad + n_rows * (ch + pad)
    cells_x = out.shape[1] - n * (cw + pad)  # left edge of column 0; labels sit before it
    assert cells_x > pad

    def row(r):
        # The n cells of grid row r side by side, without the white gaps between them.
        y = pad + r * (ch + pad)
        cells = [out[y : y + ch, cells_x + j * (cw + pad) :][:, :cw] for j in range(n)]
        return np.concatenate(cells, axis=1).astype(int)

    def grey(px):
        return (px[..., 0] == px[..., 1]) & (px[..., 1] == px[..., 2])

    assert grey(row(0)).all()  # inputs in grey
    for r in range(1, 1 + len(hidden)):
        cells = row(r)
        assert not grey(cells).any()  # winter never has R == G == B
        assert (cells[..., 0] == 0).all()  # winter has no red
    last = row(n_rows - 1)
    assert grey(last).all()  # output in grey
    assert (last == 255).any() and (last == 0).any()  # clipped, not normalised
    np.testing.assert_array_equal(
        last[:ch, :cw, 0], to_uint8_rgb(output[:1, None])[0, ..., 0].repeat(2, 0).repeat(2, 1)
    )
    # Labels on the left: some black text in the margin of every row.
    for r in range(n_rows):
        y = pad + r * (ch + pad)
        assert (out[y : y + ch, :cells_x].max(axis=2) < 100).any(), f"no label on row {r}"


def test_hidden_layer_grid_output_only():
    out = hidden_layer_grid(torch.rand(2, 1, 4, 4), [torch.rand(2, 4, 4)], scale=1, pad=1)
    assert out.shape[0] == 1 + 2 * (4 + 1)


def test_hidden_layer_grid_rejects_bad_inputs():
    inputs = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="got 0"):
        hidden_layer_grid(inputs, [])
    with pytest.raises(ValueError, match=r"layer_maps\[1\] .* got \(2, 1, 4, 4\)"):
        hidden_layer_grid(inputs, [torch.rand(2, 4, 4), torch.rand(2, 1, 4, 4)])
    with pytest.raises(ValueError, match=r"row 1 has \(2, 5, 5\)"):
        hidden_layer_grid(inputs, [torch.rand(2, 5, 5), torch.rand(2, 4, 4)])
    with pytest.raises(ValueError, match=r"row 1 has \(3, 4, 4\)"):
        hidden_layer_grid(inputs, [torch.rand(3, 4, 4)])


# --- save_png -----------------------------------------------------------------------------


def test_save_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "a" / "b" / "panel.png")
    assert path == tmp_path / "a" / "b" / "panel.png"
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), image)


def test_save_png_accepts_str_and_grid_output(tmp_path):
    grid = image_grid([torch.rand(3, 1, 5, 5)], row_labels=["x"])
    path = save_png(grid, str(tmp_path / "grid.png"))
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), grid)


def test_save_png_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="float64"):
        save_png(np.zeros((4, 4, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"got shape \(4, 4\)"):
        save_png(np.zeros((4, 4), dtype=np.uint8), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 4\)"):
        save_png(np.zeros((4, 4, 4), dtype=np.uint8), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- labelled figures ---------------------------------------------------------------------


def shown_texts(fig) -> list[Text]:
    # A tick's label on the other side exists, hidden, with the same text; only what shows counts.
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def texts(fig) -> list[str]:
    return [t.get_text() for t in shown_texts(fig)]


def image_box(fig):
    """Where the figure's grid image lands, in rendered-array pixels (left, top, right, bottom)."""
    (image,) = fig.axes[0].images
    box = image.get_window_extent()
    height = fig.bbox.height
    return box.x0, height - box.y1, box.x1, height - box.y0


def shown_grid(fig, rgb: np.ndarray) -> np.ndarray:
    """The rendered figure sampled at the centre of each of its grid image's pixels."""
    (image,) = fig.axes[0].images
    h, w = image.get_size()
    left, top, right, bottom = image_box(fig)
    xs = (left + (np.arange(w) + 0.5) * (right - left) / w).astype(int)
    ys = (top + (np.arange(h) + 0.5) * (bottom - top) / h).astype(int)
    return rgb[ys][:, xs]


def assert_shows_grid(fig, grid: np.ndarray) -> None:
    """The figure shows `grid` whole, sharp (nearest, not blurred), at least 1:1, pixels square."""
    rgb = figure_rgb(fig)
    left, top, right, bottom = image_box(fig)
    h, w = grid.shape[:2]
    assert right - left >= w and bottom - top >= h
    assert (right - left) / w == pytest.approx((bottom - top) / h, rel=0.01)
    assert min(left, top) >= 0 and right <= rgb.shape[1] and bottom <= rgb.shape[0]
    same = (shown_grid(fig, rgb) == grid).all(axis=2)
    # Rounding at the edges of the resampled pixels may shift a sample onto its neighbour.
    assert same.mean() > 0.99, f"only {same.mean():.1%} of the grid's pixels shown as they are"


def x_centre(text: Text) -> float:
    box = text.get_window_extent()
    return (box.x0 + box.x1) / 2


def test_fit_status_and_score_label():
    assert fit_status(True, 1.234e-8) == "fitted, train MSE 1.2e-08"
    assert fit_status(False, 0.0341) == "NOT fitted, train MSE 0.034"
    assert fit_status(None, None) == "fit unknown"
    assert score_label(0.968, 0.1249) == "id 0.97 / c 0.12"
    assert score_label(0.0, 0.0, flat=True) == "flat output"


def probe_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs (the training image first) and outputs: the training image copied (constant),
    the input itself (identity), a blend (neither) and a flat grey (flat)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(5, 1, 8, 8, generator=generator)
    train = inputs[:1]
    outputs = torch.stack(
        [
            inputs[0],
            train[0],
            inputs[2],
            0.5 * inputs[3] + 0.5 * train[0],
            torch.full((1, 8, 8), 0.4),
        ]
    )
    return inputs, outputs, train.expand_as(outputs)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


def test_probe_panel_says_run_fit_divider_rows_and_each_outputs_scores():
    inputs, outputs, constants = probe_batch()
    scores = per_image_scores(inputs, outputs, constants)
    title = "cnn-relu-d3-mnist7-s0: fitted, train MSE 1.2e-08"
    fig = probe_panel_figure(inputs, outputs, scores, title=title, threshold=0.9)
    words = texts(fig)
    assert title in words
    assert any(w.replace("\n", " ") == "training image" for w in words)
    assert "test probes (never trained on)" in words
    assert "inputs" in words and "outputs" in words
    (key,) = [w for w in words if w.startswith("Red bar")]
    assert "training image (left)" in key and "threshold 0.9" in key

    # Under each output, left to right: its scores, measured here with numpy's correlation.
    under = sorted(
        (t for t in shown_texts(fig) if t.get_text().startswith(("id ", "flat"))),
        key=lambda t: t.get_position()[0],
    )
    expected = [
        f"id {corr(outputs[j], inputs[j]):.2f} / c {corr(outputs[j], constants[j]):.2f}"
        for j in range(4)
    ]
    assert [t.get_text() for t in under] == [*expected, "flat output"]
    assert under[1].get_text() == f"id {corr(outputs[1], inputs[1]):.2f} / c 1.00"
    colours = [t.get_color() for t in under]
    assert colours[1] == VERDICT_COLOURS["constant"]  # the training image copied
    assert colours[2] == VERDICT_COLOURS["identity"]  # its own input
    assert colours[3] == VERDICT_COLOURS["neither"]

    # The cells are the grid itself, red divider included, and each label sits by its cells.
    grid = image_grid([inputs, outputs.clamp(0, 1)], divider_after=0)
    assert_shows_grid(fig, grid)
    left, top, right, bottom = image_box(fig)
    px = (right - left) / grid.shape[1]  # figure pixels per grid pixel
    cell, pad, divider = 8 * 3, 2, 2 * 3 + 2
    column_left = [pad + j * (cell + pad) + (divider if j else 0) for j in range(5)]
    for j, text in enumerate(under):
        x0 = left + column_left[j] * px
        assert x0 < x_centre(text) < x0 + cell * px, f"score {j} is not under its output"
        assert text.get_window_extent().y1 < fig.bbox.height - bottom  # below the cells
    (trained,) = [
        t for t in shown_texts(fig) if t.get_text().replace("\n", " ") == "training image"
    ]
    assert left < x_centre(trained) < left + (pad + cell) * px  # over the training image
    assert trained.get_window_extent().y0 > fig.bbox.height - top  # above the cells
    for r, name in enumerate(("inputs", "outputs")):
        (label,) = [t for t in shown_texts(fig) if t.get_text() == name]
        box = label.get_window_extent()
        y = fig.bbox.height - (box.y0 + box.y1) / 2
        assert box.x1 < left  # in the margin
        assert top + (pad + r * (cell + pad)) * px < y < top + (r + 1) * (cell + pad) * px


def test_probe_panel_of_a_full_probe_set_draws_the_grid_pixel_for_pixel():
    # 14 MNIST-sized probes make a grid wider than the key: it is drawn 1:1, not resampled.
    generator = torch.Generator().manual_seed(2)
    inputs = torch.rand(14, 1, 28, 28, generator=generator)
    outputs = torch.rand(14, 1, 28, 28, generator=generator)
    scores = per_image_scores(inputs, outputs, inputs[:1].expand_as(outputs))
    fig = probe_panel_figure(inputs, outputs, scores, title="a run")
    grid = image_grid([inputs, outputs], divider_after=0)
    left, top, right, bottom = (round(v) for v in image_box(fig))
    assert (bottom - top, right - left) == grid.shape[:2]
    np.testing.assert_array_equal(figure_rgb(fig)[top:bottom, left:right], grid)


def test_hidden_row_labels_name_dead_flat_and_black_output_rows():
    n = 3
    generator = torch.Generator().manual_seed(1)
    live = torch.rand(n, 6, 6, generator=generator)
    partly = live.clone()
    partly[1] = 0.7  # one input's map constant over the image
    per_map = torch.tensor([0.3, 0.3, 0.3]).reshape(n, 1, 1).expand(n, 6, 6)
    maps = [live, torch.zeros(n, 6, 6), per_map, partly, torch.rand(n, 6, 6) * 0.02 - 0.01]
    labels = hidden_row_labels(maps, ["90% live, 80% input", "dead"])
    low, high = float(live.min()), float(live.max())
    assert labels[0] == "input"
    assert labels[1] == f"layer 1\n90% live, 80% input\nvalues {low:.2g} to {high:.2g}"
    assert labels[2] == "layer 2\ndead\ndead: all 0"
    assert labels[3] == "layer 3\nflat at 0.3"
    assert labels[4].startswith("layer 4\nflat for 1 of 3 inputs, values ")
    assert labels[5].startswith("output\nnear 0 (") and labels[5].endswith("so it shows black")
    # An output in range is not called black: its values are given instead.
    bright = hidden_row_labels([torch.rand(n, 6, 6) * 0.5 + 0.5])
    assert bright[-1].startswith("output\nvalues 0.5")


def test_hidden_maps_figure_has_title_row_labels_and_colour_scales():
    inputs = torch.rand(3, 1, 6, 6)
    maps = [torch.rand(3, 6, 6), torch.zeros(3, 6, 6), torch.zeros(3, 6, 6)]
    title = "hidden layers at random init (before training)\ncnn-d3-s0"
    fig = hidden_maps_figure(inputs, maps, title=title)
    words = texts(fig)
    assert title in words
    labels = hidden_row_labels(maps)
    assert all(label in words for label in labels)
    assert "layer 2\ndead: all 0" in words and "output\ndead: all 0" in words
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    meshes = [c for ax in bars for c in ax.collections if isinstance(c, QuadMesh)]
    assert [mesh.cmap.name for mesh in meshes] == ["winter", "gray"]
    assert [t.get_text() for t in bars[0].get_xticklabels()] == ["map min", "map max"]
    assert "own min" in bars[0].get_xlabel() and "pixel value" in bars[1].get_xlabel()
    # The figure shows the rows themselves: the inputs, the layer coloured, the output in grey.
    rows = [inputs, colormap_maps(maps[0]), colormap_maps(maps[1]), maps[2].unsqueeze(1)]
    assert_shows_grid(fig, image_grid(rows, divider_after=None))
    # Each colour bar is drawn: winter runs blue to green, the grey one black to white.
    rgb = figure_rgb(fig)
    ends = []
    for bar in bars:
        box = bar.get_window_extent()
        y = round(fig.bbox.height - (box.y0 + box.y1) / 2)
        ends.append((rgb[y, round(box.x0) + 2], rgb[y, round(box.x1) - 3]))
    (blue, green), (black, white) = ends
    assert blue[2] > 200 and blue[:2].max() < 60 and green[1] > 200 and green[0] < 60
    assert black.max() < 30 and white.min() > 225


class FakeData(SimpleNamespace):
    probe_names = tuple(f"p{i}" for i in range(5))

    def probe_inputs(self):
        return probe_batch()[0]

    def name_parts(self):
        return ["mnist7"]


def test_probe_panels_writes_titled_figures_from_the_runs_own_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    torch.manual_seed(0)
    model = CNN(depth=2, channels=4, kernel_size=3)
    trainer = SimpleNamespace(
        default_root_dir=str(tmp_path), datamodule=FakeData(), loggers=[], ckpt_path=None
    )
    panels = ProbePanels()
    panels.on_fit_start(trainer, model)
    model.train_images = probe_batch()[0][:1].clone()
    model.final_loss.fill_(1.234e-8)
    panels.on_test_end(trainer, model)

    name = "-".join([*model.name_parts(), "mnist7", "s3"])
    figures = panels.figures
    assert set(figures) == {
        run_folder.PROBE_PANEL,
        run_folder.HIDDEN_TRAINED,
        run_folder.HIDDEN_INIT,
    }
    assert f"{name}: fitted, train MSE 1.2e-08" in texts(figures[run_folder.PROBE_PANEL])
    assert f"hidden layers at random init (before training)\n{name}" in texts(
        figures[run_folder.HIDDEN_INIT]
    )
    assert f"hidden layers, trained (fitted, train MSE 1.2e-08)\n{name}" in texts(
        figures[run_folder.HIDDEN_TRAINED]
    )
    # The scores under the outputs are the ones written for reports.
    saved = np.load(tmp_path / run_folder.PROBE_PREDICTIONS)
    under = sorted(
        (t for t in shown_texts(figures[run_folder.PROBE_PANEL]) if t.get_text().startswith("id")),
        key=lambda t: t.get_position()[0],
    )
    assert [t.get_text() for t in under] == [
        score_label(i, c)
        for i, c in zip(saved["identity_corr"], saved["constant_corr"], strict=True)
    ]
    for filename, figure in figures.items():
        with Image.open(tmp_path / filename) as image:
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), figure_rgb(figure))

    # A re-probe (`test --ckpt_path RUN/weights.ckpt`) says whose net it shows.
    trainer.ckpt_path = str(tmp_path / "the-trained-run" / run_folder.WEIGHTS)
    panels.on_test_end(trainer, model)
    assert "re-probe of the-trained-run: fitted, train MSE 1.2e-08" in texts(
        panels.figures[run_folder.PROBE_PANEL]
    )
