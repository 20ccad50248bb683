"""The matplotlib figures, from the configurations' numbers: the scores against the first swept key
(`curves_<key>`: the key test sets, readable at a glance; `curves_<key>_by_set`: every test set),
the verdict fractions (`verdicts_<key>`), the scores against the parameter count (`curves_params`,
`curves_params_by_set`) and, with two swept keys, heatmaps; each as .png and .svg
(`plot_figures`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from datamodules.single_example import TEST_SETS
from identity_crisis.report.grouping import (
    canonical_text,
    is_numeric,
    make_label,
    short_key_name,
    sort_value,
    value_text,
)
from identity_crisis.report.loading import ALL_SETS, CORRS, VERDICT_FRACS

# Test sets in the order the data module declares them (MNIST first), so that every figure
# draws them in one order; a set it does not know comes last, by name.
SET_ORDER = TEST_SETS
# The main curves figure shows the families a reader looks for first: the digits it was trained
# on, other natural images, synthetic patterns and pure noise; curves_by_set has every set.
KEY_SETS = ("mnist", "fashion", "patterns", "gaussian_noise")
SET_TITLES = {
    "mnist": "MNIST",
    "fashion": "Fashion-MNIST",
    "mnist_pairs": "MNIST pairs (two digits averaged)",
    "patterns": "patterns",
    "gaussian_noise": "Gaussian noise",
    "uniform_noise": "uniform noise",
    "checkerboard": "checkerboard",
    "cifar10": "CIFAR-10",
    "folder": "image folder",
}
# Line style per score (colour is left to the line groups); alone, green and red as the verdicts.
SCORE_STYLES = {"identity_corr": "-", "constant_corr": "--"}
SCORE_COLOURS = {"identity_corr": "tab:green", "constant_corr": "tab:red"}
SCORE_TEXT = {
    "identity_corr": "identity_corr: output vs its own input",
    "constant_corr": "constant_corr: output vs the training image",
}
# One colour per verdict in every panel: green the identity (the net generalized), red the
# constant (it memorized the training image), grey neither.
VERDICT_COLOURS = {
    "frac_identity": "tab:green",
    "frac_constant": "tab:red",
    "frac_neither": "tab:gray",
}


def new_figure(**kwargs) -> Figure:
    """A figure on the Agg canvas: files only, no pyplot, no window, no global state."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def mark_empty_panels(fig: Figure) -> None:
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        if not ax.get_legend_handles_labels()[0] and not ax.images:
            # Say why a panel is empty rather than leave a blank axis.
            ax.text(
                0.5,
                0.5,
                "no fitted run has this score",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )


def shared_legend(axes: np.ndarray) -> None:
    """One legend, right of the top-right panel, with the lines of whichever panel has them
    (every panel draws the same series, but any one may be empty)."""
    for ax in axes.flat:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            top_right = axes[0, -1] if axes.ndim == 2 else axes[-1]
            top_right.legend(
                handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1)
            )
            return


def save_figure(fig: Figure, out: Path, name: str) -> list[Path]:
    """<name>.png and <name>.svg (the vector copy for the paper)."""
    mark_empty_panels(fig)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, dpi=110)
    return paths


def present_test_sets(numbers: list[dict]) -> list[str]:
    sets = {k.split("/")[1] for n in numbers for k in n["mean"] if k.count("/") == 2}
    sets.discard(ALL_SETS)
    return sorted(sets, key=lambda s: (SET_ORDER.index(s) if s in SET_ORDER else 99, s))


class XAxis:
    """x positions for one key: its values when numeric (log when they span decades), else
    evenly spaced categories."""

    def __init__(self, values: list, label: str, log: bool | None = None):
        by_text = {canonical_text(v): v for v in values if v is not None}
        present = sorted(by_text.values(), key=sort_value)
        self.numeric = bool(present) and all(is_numeric(v) for v in present)
        self.categories = present
        self.label = label
        positive = self.numeric and min(present) > 0
        self.log = log if log is not None else positive and max(present) / min(present) >= 20

    def x(self, value):
        if value is None:
            return None
        if self.numeric:
            return value
        return [canonical_text(c) for c in self.categories].index(canonical_text(value))

    def style(self, ax) -> None:
        ax.set_xlabel(self.label)
        if self.log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if not self.numeric:
            ax.set_xticks(range(len(self.categories)))
            ax.set_xticklabels([str(c) for c in self.categories], rotation=30, ha="right")
        elif len(self.categories) <= 12:
            # The swept values themselves (depth 1, 3, 5, ...), not 1.25, 1.5, ...
            ax.set_xticks(self.categories, [tick_text(v) for v in self.categories])
        elif all(isinstance(v, int) for v in self.categories):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def tick_text(value) -> str:
    """2061 -> 2.1k, 3687936 -> 3.7M: tick labels of parameter counts that do not collide."""
    if isinstance(value, int) and abs(value) >= 1000:
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot_line(ax, points: list[tuple], metric: str, label: str, colour, **style) -> None:
    """Mean over seeds with the min-max band; points are (x, numbers); `style` goes to plot."""
    points = sorted(
        (p for p in points if p[0] is not None and metric in p[1]["mean"]), key=lambda p: p[0]
    )
    if not points:
        return
    xs = [p[0] for p in points]
    style = {"marker": "o", "ms": 3, **style}
    ax.plot(xs, [p[1]["mean"][metric] for p in points], color=colour, label=label, **style)
    lo = [p[1]["min"][metric] for p in points]
    hi = [p[1]["max"][metric] for p in points]
    ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, linewidth=0)


def line_groups(numbers: list[dict], keys: list[str]) -> dict[str, list[dict]]:
    """Configurations by their values of `keys` (the non-x keys): one line each."""
    groups: dict[str, list[dict]] = {}
    for n in numbers:
        label = make_label(keys, tuple(n["values"][k] for k in keys)) if keys else "all"
        groups.setdefault(label, []).append(n)
    return groups


def line_colours(count: int):
    """Distinct colours for up to 10 lines, a colour ramp for more."""
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "viridis"]
    return [cmap(i if count <= 10 else i / max(count - 1, 1)) for i in range(count)]


def main_sets(sets: list[str]) -> list[str]:
    """The test sets of the main curves figure: the KEY_SETS present, topped up to four from the
    other sets present, in SET_ORDER."""
    chosen = [s for s in KEY_SETS if s in sets]
    chosen += [s for s in sets if s not in chosen][: max(0, len(KEY_SETS) - len(chosen))]
    return sorted(chosen, key=sets.index)


def score_handles(single: bool, groups: dict, colours: list) -> list[Line2D]:
    """The main curves figure's legend: what each colour and each line style means."""
    if single:
        return [
            Line2D([], [], color=SCORE_COLOURS[score], ls=SCORE_STYLES[score], label=text)
            for score, text in SCORE_TEXT.items()
        ]
    styles = [
        Line2D([], [], color="black", ls=SCORE_STYLES[score], label=text)
        for score, text in SCORE_TEXT.items()
    ]
    lines = [
        Line2D([], [], color=colour, marker="o", label=label)
        for label, colour in zip(groups, colours, strict=True)
    ]
    return styles + lines


def score_lines(ax, name: str, groups: dict, colours: list, single: bool, x_of) -> None:
    """One test set's two scores, for every line group, in the main curves figure's styles."""
    for score in CORRS:
        for (label, members), colour in zip(groups.items(), colours, strict=True):
            plot_line(
                ax,
                [(x_of(n), n) for n in members],
                f"test/{name}/{score}",
                f"{label} {score}",
                SCORE_COLOURS[score] if single else colour,
                ls=SCORE_STYLES[score],
                ms=5,
                lw=1.8,
            )


def curves_figure(numbers: list[dict], axis: XAxis, x_of, rest: list[str], title: str) -> Figure:
    """identity_corr (solid) and constant_corr (dashed) against x, read at a glance: a panel per
    key test set (main_sets: at most four, 2 x 2), a colour per value of the other keys, or
    green and red for the two scores when there are no other keys. Every set: curves_by_set."""
    sets = main_sets(present_test_sets(numbers))
    groups = line_groups(numbers, rest)
    single = not rest
    colours = line_colours(len(groups))
    rows, columns = (1, max(len(sets), 1)) if len(sets) <= 2 else (2, 2)
    fig = new_figure(figsize=(6.0 * columns + 1.0, 4.4 * rows + 1.6))
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    # No set at all when no run counts in the means: one empty panel, which says so.
    for ax, name in zip(axes.flat, sets or [None], strict=False):
        if name is not None:
            score_lines(ax, name, groups, colours, single, x_of)
        ax.set_title(SET_TITLES.get(name, name) if name else "no test set", fontsize=13)
        ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
        ax.axhline(0, color="black", lw=0.5)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=10)
    if len(sets) == 3:
        # Three sets in a 2 x 2 grid: drop the fourth panel, and tick the x axis above it.
        fig.delaxes(axes[1, 1])
        axes[0, 1].xaxis.set_tick_params(labelbottom=True)
        axis.style(axes[0, 1])
    for ax in axes[:, 0]:
        ax.set_ylabel("correlation (mean over seeds)", fontsize=11)
    for ax in axes[-1]:
        axis.style(ax)
    for ax in fig.axes:
        ax.xaxis.label.set_size(11)
    handles = score_handles(single, groups, colours)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=10)
    fig.suptitle(f"{title} (band: min to max over seeds)", fontsize=14)
    return fig


def curves_by_set_figure(
    numbers: list[dict], axis: XAxis, x_of, rest: list[str], title: str
) -> Figure:
    """identity_corr and constant_corr against x on every test set. One key: a line per test set.
    Several keys: a panel per test set and a line per value of the other keys."""
    sets = present_test_sets(numbers)
    groups = line_groups(numbers, rest)
    per_group = bool(rest)
    # No set at all when no run counts in the means: one empty panel per score, which says so.
    columns = max(len(sets), 1) if per_group else 1
    fig = new_figure(figsize=(3.6 * columns + 1.5, 6.2))
    axes = np.atleast_2d(fig.subplots(2, columns, squeeze=False, sharex=True))
    for row, score in enumerate(CORRS):
        if per_group:
            colours = line_colours(len(groups))
            for col, name in enumerate(sets):
                ax = axes[row, col]
                for (label, members), colour in zip(groups.items(), colours, strict=True):
                    plot_line(
                        ax, [(x_of(n), n) for n in members], f"test/{name}/{score}", label, colour
                    )
                ax.set_title(f"{name}: {score}", fontsize=9)
            if not sets:
                axes[row, 0].set_title(score, fontsize=9)
        else:
            ax = axes[row, 0]
            for name, colour in zip(sets, line_colours(len(sets)), strict=True):
                plot_line(ax, [(x_of(n), n) for n in numbers], f"test/{name}/{score}", name, colour)
            ax.set_title(score)
        for ax in axes[row]:
            # Correlations can go negative; show how far, but always the 0-1 range.
            ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
            ax.axhline(0, color="black", lw=0.5)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        axis.style(ax)
    shared_legend(axes)
    fig.suptitle(f"{title} (mean over seeds, band: min-max)")
    return fig


def verdicts_figure(numbers: list[dict], axis: XAxis, x_of, rest: list[str]) -> Figure:
    """The verdict fractions against x, for MNIST and for all test sets averaged."""
    places = (("mnist", "mnist"), (ALL_SETS, "all test sets averaged"))
    groups = line_groups(numbers, rest)
    if not rest:
        fig = new_figure(figsize=(10, 3.8))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (name, title) in zip(axes, places, strict=True):
            for frac in VERDICT_FRACS:
                points = [(x_of(n), n) for n in numbers]
                plot_line(
                    ax,
                    points,
                    f"test/{name}/{frac}",
                    frac.removeprefix("frac_"),
                    VERDICT_COLOURS[frac],
                )
            ax.set_title(title)
        shared_legend(axes)
        axes = np.array([axes])
    else:
        fig = new_figure(figsize=(13, 6.4))
        axes = fig.subplots(2, 3, sharex=True, sharey=True)
        colours = line_colours(len(groups))
        for r, (name, title) in enumerate(places):
            for c, frac in enumerate(VERDICT_FRACS):
                for (label, members), colour in zip(groups.items(), colours, strict=True):
                    plot_line(
                        axes[r, c],
                        [(x_of(n), n) for n in members],
                        f"test/{name}/{frac}",
                        label,
                        colour,
                    )
                axes[r, c].set_title(f"{title}: {frac.removeprefix('frac_')}", fontsize=9)
        shared_legend(axes)
    for ax in axes.flat:
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        axis.style(ax)
    fig.suptitle("fraction of test images judged identity / constant / neither (mean over seeds)")
    return fig


def category_index(categories: list, value) -> int | None:
    """Where a value sits among an axis's categories; None for a missing value."""
    if value is None:
        return None
    return [canonical_text(v) for v in categories].index(canonical_text(value))


def heatmap_figure(numbers: list[dict], keys: list[str], score: str) -> Figure:
    """Mean MNIST score over the first two keys, one panel per value of any further keys."""
    k1, k2, rest = keys[0], keys[1], keys[2:]
    xs = XAxis([n["values"][k1] for n in numbers], k1).categories
    ys = XAxis([n["values"][k2] for n in numbers], k2).categories
    groups = line_groups(numbers, rest)
    fig = new_figure(
        figsize=(max(4.0, 0.7 * len(xs) + 2) * len(groups), max(3.0, 0.45 * len(ys) + 1.5))
    )
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    metric = f"test/mnist/{score}"
    for ax, (label, members) in zip(axes, groups.items(), strict=True):
        grid = np.full((len(ys), len(xs)), np.nan)
        for n in members:
            x = category_index(xs, n["values"][k1])
            y = category_index(ys, n["values"][k2])
            if x is not None and y is not None and metric in n["mean"]:
                grid[y, x] = n["mean"][metric]
        finite = grid[np.isfinite(grid)]
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=low, vmax=1.0, aspect="auto")
        for (y, x), value in np.ndenumerate(grid):
            text = "-" if np.isnan(value) else f"{value:.2f}"
            ax.text(
                x,
                y,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if not value > 0.6 else "black",
            )
        ax.set_xticks(range(len(xs)), [value_text(k1, v) for v in xs])
        ax.set_yticks(range(len(ys)), [value_text(k2, v) for v in ys])
        ax.set_xlabel(k1)
        ax.set_ylabel(k2)
        ax.set_title(f"mnist {score}" + (f" ({label})" if rest else ""), fontsize=9)
    fig.colorbar(image, ax=list(axes), shrink=0.9)
    return fig


def curves_files(
    numbers: list[dict], axis: XAxis, x_of, rest: list[str], title: str, out: Path, name: str
) -> list[Path]:
    """curves_<name> and, when it leaves test sets out, curves_<name>_by_set with every one."""
    files = save_figure(curves_figure(numbers, axis, x_of, rest, title), out, f"curves_{name}")
    sets = present_test_sets(numbers)
    if len(main_sets(sets)) < len(sets):
        detail = curves_by_set_figure(numbers, axis, x_of, rest, f"{title}, every test set")
        files += save_figure(detail, out, f"curves_{name}_by_set")
    return files


def plot_figures(numbers: list[dict], keys: list[str], out: Path) -> list[Path]:
    """Every matplotlib figure these configurations allow; the files written, in order."""
    files = []
    if keys:
        name = short_key_name(keys[0], keys)
        axis = XAxis([n["values"][keys[0]] for n in numbers], keys[0])

        def x_of(n):
            return axis.x(n["values"][keys[0]])

        files += curves_files(numbers, axis, x_of, keys[1:], f"scores against {keys[0]}", out, name)
        files += save_figure(
            verdicts_figure(numbers, axis, x_of, keys[1:]), out, f"verdicts_{name}"
        )
    with_params = [n for n in numbers if is_numeric(n["params"])]
    if with_params:
        axis = XAxis([n["params"] for n in with_params], "parameters (model/params)", log=True)
        title = "scores against the parameter count"
        files += curves_files(
            with_params, axis, lambda n: n["params"], keys[1:], title, out, "params"
        )
    if len(keys) >= 2:
        short = [short_key_name(k, keys) for k in keys[:2]]
        for score in CORRS:
            fig = heatmap_figure(numbers, keys, score)
            files += save_figure(fig, out, f"heatmap_{short[0]}_{short[1]}_{score}")
    return files
