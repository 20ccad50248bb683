"""The input share at initialization, beside what the trained runs became (`report --init-share`).

For each configuration, the nets of its seeds are drawn again at init: the run's family and model
options, torch seeded with the run's seed (as `identity-crisis init-signal` draws them), measured
on MNIST test digits with the metric every test records for a trained net (`layer_activity_of`:
the share of a hidden layer's variance that depends on the input). Nothing is trained; a depth-20,
128-channel net takes about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from datamodules import SingleExampleDataModule
from datamodules.errors import DataConfigError
from identity_crisis.errors import ConfigError
from identity_crisis.report.grouping import Configuration, make_label
from identity_crisis.report.plots import XAxis, line_colours, new_figure
from lightning_modules import FAMILIES, family_of

# Input shares this small are zero up to float rounding: drawn at the floor of the log axis.
FLOOR = 1e-18


def model_options(config: dict) -> dict:
    return {
        key.removeprefix("model."): value
        for key, value in config.items()
        if key.startswith("model.") and key != "model.class_path"
    }


@torch.no_grad()
def shares_at_init(config: dict, seed: int, inputs: torch.Tensor) -> list[float]:
    """A run's net at init, drawn with its seed: the input share of each hidden layer."""
    family = family_of(config.get("model.class_path", ""))
    if family is None:
        raise ConfigError(
            f"--init-share: model.class_path {config.get('model.class_path')!r} is not a model "
            f"family of this project; choose runs of {', '.join(FAMILIES)}"
        )
    torch.manual_seed(seed)
    model = family(**model_options(config)).eval()
    return list(model.layer_activity_of(inputs).get("input_share", []))


def mnist_digits(configs: list[Configuration], test_size: int) -> torch.Tensor:
    """The first `test_size` MNIST test digits, from the runs' own data root where this machine
    has it (else the default: $IDC_DATA_DIR or ./data)."""
    roots = {r.config.get("data.root") for c in configs for r in c.runs} - {None}
    roots = {root for root in roots if Path(str(root)).is_dir()}
    try:
        data = SingleExampleDataModule(
            root=min(roots) if roots else None, test_sets=["mnist"], test_size=test_size
        )
        data.setup("test")
    except DataConfigError as error:
        raise ConfigError(f"--init-share needs MNIST's test digits: {error}") from None
    return data.test_inputs["mnist"]


def init_share_numbers(
    configs: list[Configuration], keys: list[str], layers: list[int], test_size: int = 20
) -> list[dict]:
    """Per configuration: the seeds drawn and, per asked hidden layer, the input share at init
    (mean, min and max over those seeds). A layer the net does not have is named."""
    inputs = mnist_digits(configs, test_size)
    rows = []
    for config in configs:
        # A cell still running or one that left no run folder has no full config to draw from.
        runs = [r for r in config.runs if r.seed is not None and not r.partial_config]
        per_seed = {r.seed: shares_at_init(r.config, r.seed, inputs) for r in runs}
        depth = min((len(s) for s in per_seed.values()), default=0)
        missing = [layer for layer in layers if layer > depth]
        if missing:
            raise ConfigError(
                f"--init-share: {config.label} has {depth} hidden layers, no layer "
                f"{', '.join(map(str, missing))}; give layers 1-{depth}"
            )
        shares = {
            layer: [per_seed[seed][layer - 1] for seed in sorted(per_seed)] for layer in layers
        }
        rows.append(
            {
                "label": config.label,
                "values": dict(zip(keys, config.values, strict=True)),
                "seeds": sorted(per_seed),
                "input_share": {
                    str(layer): {"mean": float(np.mean(v)), "min": min(v), "max": max(v)}
                    for layer, v in shares.items()
                },
            }
        )
    return rows


def init_share_figure(rows: list[dict], keys: list[str], key: str) -> Figure:
    """Input share at init against `key`, a panel per recipe (the other swept keys), one line
    per hidden layer, on the x axis the share figure (constant_share_<key>) uses: the mean over
    seeds, the bar spanning their min and max."""
    axis = XAxis([r["values"][key] for r in rows], key)
    rest = [k for k in keys if k != key]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        label = make_label(rest, tuple(r["values"][k] for k in rest)) if rest else ""
        groups.setdefault(label, []).append(r)
    layers = list(rows[0]["input_share"]) if rows else []
    lowest = min((s["min"] for r in rows for s in r["input_share"].values()), default=1.0)
    fig = new_figure(figsize=(4.0 + 4.5 * len(groups), 5.0))
    axes = np.atleast_1d(fig.subplots(1, len(groups), sharey=True, squeeze=False)[0])
    for ax, (label, members) in zip(axes, groups.items(), strict=True):
        for layer, colour in zip(layers, line_colours(len(layers)), strict=True):
            points = sorted(
                (axis.x(r["values"][key]), r["input_share"][layer])
                for r in members
                if r["values"][key] is not None
            )
            xs = np.array([x for x, _ in points], dtype=float)
            mean, low, high = (
                np.maximum([s[part] for _, s in points], FLOOR) for part in ("mean", "min", "max")
            )
            ax.errorbar(
                xs,
                mean,
                yerr=[mean - low, high - mean],
                fmt="o-",
                color=colour,
                capsize=4,
                label=f"hidden layer {layer}",
            )
        ax.set_yscale("log")
        ax.set_ylim(max(FLOOR, lowest) / 3, 3)
        ax.grid(alpha=0.3)
        axis.style(ax)
        if label:
            ax.set_title(label, fontsize=11)
    axes[0].set_ylabel("input share of the layer's variance at init", fontsize=11)
    seeds = sorted({s for r in rows for s in r["seeds"]})
    fig.suptitle(
        f"Input share at initialization against {key.rsplit('.', 1)[-1]}\n"
        f"points: mean over seeds {', '.join(map(str, seeds))}; bars: their min and max; "
        f"shares below {FLOOR:g} drawn at {FLOOR:g}",
        fontsize=12,
    )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=max(1, len(layers)), fontsize=9)
    return fig
