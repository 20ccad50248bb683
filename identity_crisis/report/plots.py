"""The matplotlib figures, from the configurations' numbers: the scores against the first swept key
(`curves_<key>`: the key test sets, readable at a glance; `curves_<key>_by_set`: every test set),
the verdict fractions (`verdicts_<key>`), the scores against the parameter count (`curves_params`,
`curves_params_by_set`), the share of fitted seeds whose net is the constant against the
transition key with its logistic fits (`constant_share_<key>`) and, with two swept keys, heatmaps
of the share of constants and of identities with k/n in each cell; each as .png and .svg
(`plot_figures`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from datamodules.single_example import HEADLINE_TEST_SETS, TEST_SETS
from identity_crisis.jsonio import atomic_path
from identity_crisis.report.grouping import (
    canonical_text,
    is_numeric,
    make_label,
    short_key_name,
    sort_value,
    value_text,
)
from identity_crisis.report.loading import ALL_SETS, CORRS
from identity_crisis.report.shares import recipes
from identity_crisis.report.stats import logistic_curve
from identity_crisis.verdict import VERDICT_COLOURS
from lightning_modules.metrics import FRACTIONS, score_key, split_score_key

# Test sets in the order the data module declares them (MNIST first), so that every figure
# draws them in one order; a set it does not know comes last, by name.
SET_ORDER = TEST_SETS
# The main curves figure shows the families a reader looks for first: the digits it was trained
# on, other natural images, synthetic patterns and pure noise; curves_by_set has every set.
KEY_SETS = HEADLINE_TEST_SETS
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
SCORE_COLOURS = {
    "identity_corr": VERDICT_COLOURS["identity"],
    "constant_corr": VERDICT_COLOURS["constant"],
}
SCORE_TEXT = {
    "identity_corr": "identity_corr: output vs its own input",
    "constant_corr": "constant_corr: output vs the training image",
}
FRACTION_COLOURS = {f"frac_{verdict}": colour for verdict, colour in VERDICT_COLOURS.items()}
# The share heatmaps, one per net verdict, in the verdict's colour.
SHARE_CMAPS = {"constant": "Reds", "identity": "Greens"}


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
        # Whole or not at all: a full disk or a kill leaves the earlier figure, never half one.
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip("."))
    return paths


def present_test_sets(numbers: list[dict]) -> list[str]:
    sets = {split[0] for n in numbers for k in n["mean"] if (split := split_score_key(k))}
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
        # Log only over two decades or more: depth 1-20 on a log axis crowds 14, 16, 18 and 20.
        self.log = log if log is not None else positive and max(present) / min(present) >= 100

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
    # Means that count a net that did not fit (--include-unfitted): an open ring marks them.
    unfitted = [p for p in points if not_fitted(p[1])]
    if unfitted:
        ax.plot(
            [p[0] for p in unfitted],
            [p[1]["mean"][metric] for p in unfitted],
            ls="none",
            marker="o",
            ms=9,
            mfc="white",
            mec=colour,
            mew=1.5,
        )
    lo = [p[1]["min"][metric] for p in points]
    hi = [p[1]["max"][metric] for p in points]
    ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, linewidth=0)


def not_fitted(n: dict) -> bool:
    """A configuration whose numbers count a run that did not fit."""
    return n.get("fitted", 0) < n.get("used", 0)


def seeds_note(numbers: list[dict]) -> str:
    """What the lines are over: 'mean over seeds, band: min to max' only where some point has
    more than one seed; else the one seed they show. Says so when some points count nets that
    did not fit (open rings)."""
    ring = "; open rings: not fitted (counted by --include-unfitted)"
    ring = ring if any(not_fitted(n) for n in numbers) else ""
    if any(n.get("used", 0) > 1 for n in numbers):
        return f"mean over seeds, band: min to max{ring or ' (fitted seeds only)'}"
    seeds = sorted({seed for n in numbers for seed in n.get("seeds", [])})
    return f"one seed per point (seed {', '.join(map(str, seeds)) or '-'}), no band{ring}"


def fit_y_range(axes) -> None:
    """Shared correlation axes: always 0-1, and down to the lowest point of any panel (a panel's
    own limits would cut another's negative correlations)."""
    lows = [ax.dataLim.y0 for ax in axes if ax.has_data()]
    low = min([-0.1, *(y - 0.05 for y in lows)])
    for ax in axes:
        ax.set_ylim(low, 1.05)


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
                score_key(name, score),
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
        ax.axhline(0, color="black", lw=0.5)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=10)
    fit_y_range(axes.flat)
    if len(sets) == 3:
        # Three sets in a 2 x 2 grid: drop the fourth panel, and tick the x axis above it.
        fig.delaxes(axes[1, 1])
        axes[0, 1].xaxis.set_tick_params(labelbottom=True)
        axis.style(axes[0, 1])
    for ax in axes[:, 0]:
        ax.set_ylabel("correlation", fontsize=11)
    for ax in axes[-1]:
        axis.style(ax)
    for ax in fig.axes:
        ax.xaxis.label.set_size(11)
    handles = score_handles(single, groups, colours)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=10)
    fig.suptitle(f"{title}\n{seeds_note(numbers)}", fontsize=13)
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
                        ax, [(x_of(n), n) for n in members], score_key(name, score), label, colour
                    )
                ax.set_title(f"{name}: {score}", fontsize=9)
            if not sets:
                axes[row, 0].set_title(score, fontsize=9)
        else:
            ax = axes[row, 0]
            for name, colour in zip(sets, line_colours(len(sets)), strict=True):
                plot_line(ax, [(x_of(n), n) for n in numbers], score_key(name, score), name, colour)
            ax.set_title(score)
        # Correlations can go negative; show how far, but always the 0-1 range.
        fit_y_range(axes[row])
        for ax in axes[row]:
            ax.axhline(0, color="black", lw=0.5)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        axis.style(ax)
    shared_legend(axes)
    fig.suptitle(f"{title}\n{seeds_note(numbers)}")
    return fig


def verdicts_figure(numbers: list[dict], axis: XAxis, x_of, rest: list[str]) -> Figure:
    """The verdict fractions against x, for MNIST and for all test sets averaged."""
    places = (("mnist", "mnist"), (ALL_SETS, "all test sets averaged"))
    groups = line_groups(numbers, rest)
    if not rest:
        fig = new_figure(figsize=(10, 3.8))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (name, title) in zip(axes, places, strict=True):
            for frac in FRACTIONS:
                points = [(x_of(n), n) for n in numbers]
                plot_line(
                    ax,
                    points,
                    score_key(name, frac),
                    frac.removeprefix("frac_"),
                    FRACTION_COLOURS[frac],
                )
            ax.set_title(title)
        shared_legend(axes)
        axes = np.array([axes])
    else:
        fig = new_figure(figsize=(13, 6.4))
        axes = fig.subplots(2, 3, sharex=True, sharey=True)
        colours = line_colours(len(groups))
        for r, (name, title) in enumerate(places):
            for c, frac in enumerate(FRACTIONS):
                for (label, members), colour in zip(groups.items(), colours, strict=True):
                    plot_line(
                        axes[r, c],
                        [(x_of(n), n) for n in members],
                        score_key(name, frac),
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


def share_heatmap_figure(shares: list[dict], keys: list[str], verdict: str) -> Figure:
    """The share of fitted seeds whose net is `verdict` over the first two keys, "k/n" in each
    cell (and the runs that did not fit), one panel per value of any further keys. A share, not
    a mean score: a mean over a constant net and a non-constant one is a value no net had."""
    k1, k2, rest = keys[0], keys[1], keys[2:]
    xs = XAxis([s["values"][k1] for s in shares], k1).categories
    ys = XAxis([s["values"][k2] for s in shares], k2).categories
    groups = line_groups(shares, rest)
    fig = new_figure(
        figsize=(max(5.0, 0.9 * len(xs) + 3.0) * len(groups) + 1.0, max(3.4, 0.6 * len(ys) + 2.0))
    )
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    cmap = matplotlib.colormaps[SHARE_CMAPS[verdict]].with_extremes(bad="lightgrey")
    for ax, (label, members) in zip(axes, groups.items(), strict=True):
        grid = np.full((len(ys), len(xs)), np.nan)
        texts = {}
        for s in members:
            x = category_index(xs, s["values"][k1])
            y = category_index(ys, s["values"][k2])
            if x is None or y is None:
                continue
            counted = s[verdict]
            if counted["n"]:
                grid[y, x] = counted["share"]
            unfitted = f"\n+{s['not_fitted']} unfitted" if s["not_fitted"] else ""
            texts[y, x] = f"{counted['k']}/{counted['n']}{unfitted}"
        image = ax.imshow(grid, origin="lower", cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for (y, x), value in np.ndenumerate(grid):
            ax.text(
                x,
                y,
                texts.get((y, x), "no run"),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if value > 0.6 else "black",
            )
        ax.set_xticks(range(len(xs)), [value_text(k1, v) for v in xs])
        ax.set_yticks(range(len(ys)), [value_text(k2, v) for v in ys])
        ax.set_xlabel(k1)
        ax.set_ylabel(k2)
        ax.set_title(
            f"the {verdict}: k of n fitted seeds" + (f" ({label})" if rest else ""), fontsize=10
        )
    colorbar = fig.colorbar(image, ax=list(axes), shrink=0.9)
    colorbar.set_label("share of fitted seeds")
    fig.suptitle(f"Nets that are the {verdict} (grey: no fitted seed)", fontsize=11)
    return fig


def share_figure(shares: list[dict], keys: list[str], key: str, fits: dict | None) -> Figure:
    """P(constant) against `key`, one line per recipe: the share of fitted seeds at each value
    with its 95% Wilson interval and "k/n" beside it, and the logistic fit with its 50% point
    and that point's interval (a bar at P = 0.5) where `fits` has one."""
    groups = recipes(shares, keys, key)
    axis = XAxis([s["values"][key] for s in shares], key)
    fit_of = {f["recipe"]: f for f in fits["recipes"]} if fits else {}
    fig = new_figure(figsize=(9.0, 5.6))
    ax = fig.subplots()
    colours = line_colours(len(groups))
    positions = sorted({axis.x(s["values"][key]) for s in shares if s["values"][key] is not None})
    spacing = min(np.diff(positions), default=1.0) if len(positions) > 1 else 1.0
    span = (positions[0], positions[-1]) if positions else (0, 1)
    for i, ((label, members), colour) in enumerate(zip(groups.items(), colours, strict=True)):
        # Recipes side by side at one x, so their bars do not hide each other.
        shift = 0.0 if axis.log else (i - (len(groups) - 1) / 2) * 0.08 * spacing
        points = sorted(
            (s for s in members if s["values"][key] is not None and s["n"]),
            key=lambda s: axis.x(s["values"][key]),
        )
        for s in members:
            if s["n"] == 0 and s["values"][key] is not None:
                # No fitted seed: no share to draw, but the runs are there and are shown.
                x = axis.x(s["values"][key]) + shift
                ax.plot([x], [0.5], marker="x", ms=8, color=colour, ls="none")
                text = ax.annotate(
                    f"no fitted seed\n({s['not_fitted']} unfitted, {s['no_result']} no result)",
                    (x, 0.5),
                    xytext=(0, 8),
                    textcoords="offset points",
                    ha="center",
                    fontsize=9,
                    color=colour,
                )
                # A label must not shrink the axes to make room for itself.
                text.set_in_layout(False)
        if not points:
            continue
        fit = fit_of.get(label)
        legend = label if len(groups) > 1 else "share of fitted seeds"
        if fit:
            legend += f": {fit_legend(fit)}"
        xs = np.array([axis.x(s["values"][key]) + shift for s in points], dtype=float)
        ys = np.array([s["constant"]["share"] for s in points], dtype=float)
        low = np.array([s["constant"]["low"] for s in points], dtype=float)
        high = np.array([s["constant"]["high"] for s in points], dtype=float)
        ax.errorbar(
            xs,
            ys,
            yerr=[ys - low, high - ys],
            fmt="o",
            color=colour,
            capsize=4,
            ms=6,
            label=legend,
        )
        for s, x, y in zip(points, xs, ys, strict=True):
            unfitted = f" +{s['not_fitted']} unfitted" if s["not_fitted"] else ""
            text = ax.annotate(
                f"{s['constant']['k']}/{s['n']}{unfitted}",
                (x, y),
                xytext=(6, -12 if y > 0.9 else 6),
                textcoords="offset points",
                fontsize=9,
                color=colour,
            )
            text.set_in_layout(False)
        if fit:
            # The 50% bars of several recipes apart by a hair, so that each stays visible.
            draw_fit(ax, fit, colour, span, 0.5 + (i - (len(groups) - 1) / 2) * 0.018)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylim(-0.06, 1.12)
    ax.margins(x=0.12)  # room for the labels beside the first and last points
    ax.set_ylabel("P(constant): share of fitted seeds", fontsize=11)
    ax.grid(alpha=0.3)
    axis.style(ax)
    ax.xaxis.label.set_size(11)
    method = fits["recipes"][0]["method"] if fits and fits["recipes"] else None
    lines = (
        f"\nlines: logistic fits; bar at P = 0.5: the {method} of the 50% point" if method else ""
    )
    fig.suptitle(
        f"Share of fitted seeds whose net is the constant, against {key.rsplit('.', 1)[-1]}\n"
        f"k/n: constants of n fitted seeds; error bars: 95% Wilson intervals{lines}",
        fontsize=12,
    )
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=1, fontsize=9)
    return fig


def fit_legend(fit: dict) -> str:
    """'50% at 17.9 (14.5-19.3)', 'jumps between 16 and 18', or why there is no estimate."""

    if fit["low"] is None and fit["high"] is None:
        interval = " (95% interval unbounded)"
    else:
        low = "-inf" if fit["low"] is None else f"{fit['low']:.3g}"
        high = "inf" if fit["high"] is None else f"{fit['high']:.3g}"
        interval = f" (95%: {low} to {high})"
    if fit["status"] == "fitted":
        return f"50% at {fit['x50']:.3g}{interval}"
    if fit["status"] == "separated":
        low, high = fit["between"]
        where = f"at {low:g}" if low == high else f"between {low:g} and {high:g}"
        return f"separated, jumps {where}{interval}"
    return "no 50% point (" + fit["note"].removeprefix("not estimable: ").split(",")[0] + ")"


def draw_fit(ax, fit: dict, colour, span: tuple, level: float = 0.5) -> None:
    """The fitted curve over the values run, and the 50% point's interval as a bar at P = 0.5
    (to the plot's edge where it is unbounded); a shaded band where the data separate."""
    if fit["status"] == "not estimable":
        return
    margin = 0.05 * (span[1] - span[0] or 1)
    left, right = span[0] - margin, span[1] + margin
    grid = np.linspace(span[0], span[1], 200)
    curve = logistic_curve(fit, grid)
    if curve is not None:
        ax.plot(grid, curve, color=colour, lw=1.5)
    if fit["status"] == "separated":
        low, high = fit["between"]
        ax.axvspan(low, high, color=colour, alpha=0.12, lw=0)
    low = left if fit["low"] is None else max(left, fit["low"])
    high = right if fit["high"] is None else min(right, fit["high"])
    ax.plot([low, high], [level, level], color=colour, lw=4, alpha=0.45, solid_capstyle="butt")
    if fit["x50"] is not None and left <= fit["x50"] <= right:
        ax.plot([fit["x50"]], [0.5], marker="D", color=colour, ms=6)


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


def plot_figures(
    numbers: list[dict],
    keys: list[str],
    out: Path,
    shares: list[dict] | None = None,
    fits: dict | None = None,
) -> list[Path]:
    """Every matplotlib figure these configurations allow; the files written, in order. With
    `shares` (shares.share_numbers) and `fits` (shares.transitions), also the share of
    constants against the transition key and, with two swept keys, the share heatmaps."""
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
    if shares:
        key = fits["key"] if fits else keys[0] if keys else None
        if key is not None:
            fig = share_figure(shares, keys, key, fits)
            files += save_figure(fig, out, f"constant_share_{short_key_name(key, keys)}")
    if shares and len(keys) >= 2:
        short = [short_key_name(k, keys) for k in keys[:2]]
        for verdict in SHARE_CMAPS:
            fig = share_heatmap_figure(shares, keys, verdict)
            files += save_figure(fig, out, f"heatmap_{short[0]}_{short[1]}_{verdict}")
    return files
