"""The image figures, drawn with PIL from each run's own pictures: the prediction grid (paper
figures 2/3) and the hidden maps at initialization beside the trained ones (paper figure 4)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from identity_crisis import run_folder
from identity_crisis.errors import ConfigError
from identity_crisis.images import image_grid, save_png
from identity_crisis.jsonio import atomic_path
from identity_crisis.report.grouping import DEPTH_KEY, Configuration, is_numeric
from identity_crisis.report.loading import RunRecord, shown_path
from identity_crisis.report.run_files import BadFile

# Probe images are 28x28: drawn 3x (nearest, so pixels stay sharp) they are legible at 100%; 2
# white pixels frame each cell. report.json's "grid" records both, so a cell can be found in the
# PNG.
GRID_SCALE, GRID_PAD = 3, 2
# The hidden-map figure: HIDDEN_GAP white pixels keep the initial and trained maps apart as two
# images, and a HIDDEN_STRIP pixel white strip on top holds their titles (text 2/3 of it high).
HIDDEN_GAP, HIDDEN_STRIP = 16, 30


def drawn_run(config: Configuration, seed) -> RunRecord | None:
    """The run drawn for this seed: a fitted one first, then any finished one."""
    runs = [r for r in config.runs if r.seed == seed]
    for wanted in (lambda r: r.usable(), lambda r: r.status == run_folder.OK):
        for run in runs:
            if wanted(run):
                return run
    return runs[0] if runs else None


def same_shape_rows(arrays: list[np.ndarray | None]) -> list[torch.Tensor]:
    """Probe batches to one shape (the largest, grey promoted to RGB when any row is RGB), so
    MNIST and CIFAR-10 configurations share a grid; a missing row is drawn blank (white)."""
    present = [torch.as_tensor(a, dtype=torch.float32) for a in arrays if a is not None]
    n = max(t.shape[0] for t in present)
    c = 3 if any(t.shape[1] == 3 for t in present) else 1
    h = max(t.shape[2] for t in present)
    w = max(t.shape[3] for t in present)
    rows = []
    for array in arrays:
        if array is None:
            rows.append(torch.ones(n, c, h, w))
            continue
        t = torch.as_tensor(array, dtype=torch.float32)
        if t.shape[2:] != (h, w):
            t = F.interpolate(t, size=(h, w), mode="nearest")
        t = t.expand(-1, c, -1, -1) if t.shape[1] != c else t
        if t.shape[0] < n:
            t = torch.cat([t, torch.ones(n - t.shape[0], c, h, w)])
        rows.append(t.clamp(0, 1))
    return rows


def grid_row(config: Configuration, seed) -> tuple[RunRecord | None, dict | None, str, str | None]:
    """(run, predictions, label suffix, note) of one configuration's row in the grid: the drawn
    run's predictions, or why the row is blank; a note when that is a broken or unreadable file."""
    run = drawn_run(config, seed)
    if run is None:
        return None, None, " (no run)", None
    if run.status == run_folder.BROKEN:
        why = f"{shown_path(run.source)} is broken ({run.error})"
        return run, None, " (broken)", f"prediction grid: {config.label} left blank: {why}"
    if run.status != run_folder.OK:
        return run, None, f" ({run.status})", None
    try:
        data = run.predictions()
    except BadFile as error:
        why = f"{shown_path(run.source)}: {error}"
        return run, None, " (unreadable)", f"prediction grid: {config.label} left blank: {why}"
    if data is None:
        return run, None, " (no predictions)", None
    return run, data, "" if run.fitted else " (unfit)", None


def prediction_grid(
    configs: list[Configuration], seed, out: Path
) -> tuple[Path | None, dict, list[str]]:
    """Paper figures 2/3: the inputs, then one row of outputs per configuration; and the notes
    on rows left blank by a broken run or an unreadable file."""
    labels, outputs, sources, notes = [], [], [], []
    inputs = None
    for config in configs:
        run, data, suffix, note = grid_row(config, seed)
        if data is not None and inputs is None:
            inputs = data["inputs"]
        labels.append(config.label + suffix)
        outputs.append(None if data is None else data["outputs"])
        sources.append(None if run is None else run.source)
        notes += [note] if note else []
    info = {
        "seed": seed,
        "rows": [
            {"label": lb, "source": shown_path(s)} for lb, s in zip(labels, sources, strict=True)
        ],
    }
    if inputs is None:
        return None, info, notes
    rows = same_shape_rows([inputs, *outputs])
    grid = image_grid(
        rows, row_labels=["input", *labels], divider_after=0, scale=GRID_SCALE, pad=GRID_PAD
    )
    info.update(scale=GRID_SCALE, pad=GRID_PAD, columns=int(rows[0].shape[0]))
    return save_png(grid, out / "prediction_grid.png"), info, notes


def label_font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def hidden_figure(init: Image.Image | None, trained: Image.Image, title: str) -> Image.Image:
    """Paper figure 4: the net at initialization beside the trained net, a label strip on top."""
    panels = [("random init", init), ("trained", trained)]
    panels = [(name, image) for name, image in panels if image is not None]
    width = sum(image.width for _, image in panels) + HIDDEN_GAP * (len(panels) - 1)
    height = HIDDEN_STRIP + max(image.height for _, image in panels)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = label_font(HIDDEN_STRIP * 2 // 3)
    x = 0
    for name, image in panels:
        canvas.paste(image, (x, HIDDEN_STRIP))
        draw.text((x + 4, 3), f"{title}: {name}", fill="black", font=font)
        x += image.width + HIDDEN_GAP
    return canvas


def hidden_choice(configs: list[Configuration], depths: list[int] | None) -> list[Configuration]:
    """The configurations of the hidden-map figures: every one of each --hidden depth, by default
    the first configuration of the smallest depth and the last of the largest."""
    with_depth = [c for c in configs if is_numeric(c.value(DEPTH_KEY))]
    if depths is None:
        if not with_depth:
            return []
        low = min(c.value(DEPTH_KEY) for c in with_depth)
        high = max(c.value(DEPTH_KEY) for c in with_depth)
        chosen = [next(c for c in with_depth if c.value(DEPTH_KEY) == low)]
        last = [c for c in with_depth if c.value(DEPTH_KEY) == high][-1]
        chosen += [last] if last is not chosen[0] else []
    else:
        present = sorted({c.value(DEPTH_KEY) for c in with_depth})
        chosen = []
        for depth in depths:
            matching = [c for c in with_depth if c.value(DEPTH_KEY) == depth]
            if not matching:
                raise ConfigError(
                    f"--hidden {depth}: no configuration has {DEPTH_KEY}={depth}; "
                    f"depths present: {', '.join(map(str, present)) or 'none'}"
                )
            chosen += [c for c in matching if c not in chosen]
    return chosen


def file_slug(text: str) -> str:
    """A label as a file-name part: every run of other characters becomes one "-"."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-") or "run"


def hidden_figures(chosen: list[Configuration], seed, out: Path) -> tuple[list[Path], list[str]]:
    """hidden_<label>.png per chosen configuration, for the run of `seed`."""
    files, notes = [], []
    for config in chosen:
        run = drawn_run(config, seed)
        which = f"no hidden maps for {config.label}, seed {seed}"
        if run is not None and run.status == run_folder.BROKEN:
            notes.append(f"{which}: {run.source} is broken ({run.error})")
            continue
        try:
            trained = run.hidden("trained") if run is not None else None
            init = run.hidden("init") if trained is not None else None
        except BadFile as error:
            notes.append(f"{which}: {run.source}: {error}")
            continue
        if trained is None:
            notes.append(f"{which} (FCN runs have none)")
            continue
        figure = hidden_figure(init, trained, f"{config.label}, seed {seed}")
        path = out / f"hidden_{file_slug(config.label)}.png"
        with atomic_path(path) as tmp:
            figure.save(tmp, format="PNG")
        files.append(path)
    return files, notes
