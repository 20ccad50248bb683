"""From runs to configurations: which config keys are swept (`swept_keys`), how a configuration
is labelled, the runs that share every swept value (`group_configurations`), their numbers over
seeds (`configuration_numbers`) and every run that is not a clean result (`find_problems`)."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass

import numpy as np

from datamodules.single_example import SingleExampleDataModule
from identity_crisis import run_folder
from identity_crisis.errors import ConfigError
from identity_crisis.report.loading import SEED_KEY, RunRecord, shown_path
from lightning_modules import short_names

# The key of the paper's figure 3/4 sweeps: a configuration of one family with no swept key is
# labelled by it ("CNN d5"), and the hidden-map figures (--hidden) are chosen by it.
DEPTH_KEY = "model.depth"
# Keys that never make two runs different experiments: the seed, where a run was written, how it
# was scheduled and what it printed (run_folder holds the lists, which the run hash also uses).
# Keys with a "/" are W&B hyperparameters logged by the run itself (model/params), keys with a
# leading "_" W&B's own.
BOOKKEEPING = {SEED_KEY, *run_folder.RESULT_NEUTRAL_KEYS, *run_folder.SAME_EXPERIMENT_KEYS}
BOOKKEEPING_PREFIXES = run_folder.RESULT_NEUTRAL_PREFIXES
# Default order of the swept keys (the first is the x axis and the outer sort of the rows). Depth
# first, as the paper's figures go by depth; then the other sizes of the net, the learning rate
# and the number of training images. Unlisted keys follow by name, numeric keys before others.
KEY_PRIORITY = (
    "model.depth",
    "model.channels",
    "model.width",
    "model.kernel_size",
    "model.block_size",
    "model.lr",
    "data.num_train",
)
# How a key reads in a row label with several keys: "d5", "c128", as the run names read it (the
# families and the data module declare their short names); strings read as themselves. Short, as
# the grid's label margin is as wide as its longest label and the legends sit beside the panels;
# other numeric keys read as "<last part of the key>=<value>".
SHORT = {
    **short_names(),
    **{f"data.{key}": short for key, short in SingleExampleDataModule.SHORT_NAMES.items()},
    "model.lr": "lr",
    "model.momentum": "m",
    "trainer.max_steps": "steps",
}
# A key a run's config does not have reads as None, like an explicit null: shown "-", sorted
# last, and the same for grouping as a null value.
MISSING = None


def canonical_text(value) -> str:
    """One text per value (dicts key-sorted): how values are compared, grouped and deduplicated,
    lists and dicts included."""
    return json.dumps(value, sort_keys=True, default=str)


def is_bookkeeping(key: str) -> bool:
    return (
        key in BOOKKEEPING
        or key.startswith(BOOKKEEPING_PREFIXES)
        or "/" in key
        or key.startswith("_")
    )


def is_numeric(value) -> bool:
    """A finite number: a value to place on an axis or compare by size (.nan and .inf in a
    config are categories, like strings)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def sort_value(value):
    """A sort key for config values of any type: booleans, then numbers, then the rest by text,
    missing values last."""
    if value is None:
        return (3, 0, "")
    if isinstance(value, bool):
        return (0, int(value), "")
    if is_numeric(value):
        return (1, value, "")
    return (2, 0, str(value) if isinstance(value, str) else canonical_text(value))


def distinct_values(records: list[RunRecord], key: str) -> set[str]:
    """The values a key takes across the runs; a partial config only counts the keys it has."""
    values = set()
    for r in records:
        if not r.partial_config or key in r.config:
            values.add(canonical_text(r.config.get(key, MISSING)))
    return values


def swept_keys(
    records: list[RunRecord], requested: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """(keys, also, follow): the keys the report is ordered and plotted by; the keys that vary
    beyond those the user asked for and would merge configurations (appended to keys); and the
    keys that vary but take one value per configuration of the asked-for keys (a budget raised
    for one depth only), which cannot merge anything and are named in a note instead."""
    known = sorted({k for r in records for k in r.config})
    varying = [k for k in known if not is_bookkeeping(k) and len(distinct_values(records, k)) > 1]

    def order(key: str):
        values = [r.config.get(key) for r in records if r.config.get(key) is not None]
        numeric = bool(values) and all(is_numeric(v) for v in values)
        priority = KEY_PRIORITY.index(key) if key in KEY_PRIORITY else len(KEY_PRIORITY)
        return (0 if numeric else 1, priority, key)

    keys = []
    for name in requested:
        if name in known:
            key = name
        else:
            # A bare name works when it ends exactly one dotted key: depth -> model.depth.
            matches = [k for k in known if k.endswith("." + name)]
            if len(matches) != 1:
                close = difflib.get_close_matches(name, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                swept = ", ".join(varying) or "none"
                raise ConfigError(
                    f"--key {name!r} is not a config key of these runs{hint} (swept keys: {swept})"
                )
            key = matches[0]
        if key not in keys:
            keys.append(key)
    extra = sorted((k for k in varying if k not in keys), key=order)
    if not requested:
        return extra, [], []
    follow = [k for k in extra if one_value_per_group(records, keys, k)]
    also = [k for k in extra if k not in follow]
    return keys + also, also, follow


def one_value_per_group(records: list[RunRecord], keys: list[str], key: str) -> bool:
    """Whether `key` takes one value within each configuration of `keys`."""
    seen: dict[tuple, str] = {}
    for r in records:
        group = tuple(canonical_text(r.config.get(k, MISSING)) for k in keys)
        value = canonical_text(r.config.get(key, MISSING))
        if seen.setdefault(group, value) != value:
            return False
    return True


def follow_note(key: str, configs: list[Configuration]) -> str:
    """'trainer.max_steps (one value per row): 12000 for depth 1; 5000 for depth 3, depth 5'."""
    rows: dict[str, list[str]] = {}
    for config in configs:
        rows.setdefault(value_text(key, config.value(key)), []).append(config.label)
    parts = [f"{value} for {', '.join(labels)}" for value, labels in rows.items()]
    return f"{key} (one value per row): {'; '.join(parts)}"


def short_key_name(key: str, keys: list[str]) -> str:
    """A key's last part (model.depth -> depth) for file names and columns, or the whole key
    with _ for . when another key ends the same way."""
    last = key.rsplit(".", 1)[-1]
    clash = sum(k.rsplit(".", 1)[-1] == last for k in keys) > 1
    return key.replace(".", "_") if clash else last


def value_text(key: str, value) -> str:
    """A config value as labels, ticks and the table show it: "-" for none, a model class by its
    name, floats in %g."""
    if value is None:
        return "-"
    if key == "model.class_path" and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if isinstance(value, str | int) else canonical_text(value)


def make_label(keys: list[str], values: tuple) -> str:
    """'depth 5' for one key; 'linear d2' for several (strings first, numbers abbreviated)."""
    if len(keys) == 1:
        return f"{keys[0].rsplit('.', 1)[-1]} {value_text(keys[0], values[0])}"
    words, numbers = [], []
    for key, value in zip(keys, values, strict=True):
        if isinstance(value, bool):
            words.append(key.rsplit(".", 1)[-1] if value else f"no {key.rsplit('.', 1)[-1]}")
        elif isinstance(value, str):
            words.append(value_text(key, value))
        else:
            prefix = SHORT.get(key, key.rsplit(".", 1)[-1] + "=")
            numbers.append(f"{prefix}{value_text(key, value)}")
    return " ".join(words + numbers)


@dataclass
class Configuration:
    values: tuple
    label: str
    runs: list[RunRecord]

    def used(self, include_unfitted: bool) -> list[RunRecord]:
        return [r for r in self.runs if r.usable(include_unfitted)]

    def value(self, key: str):
        for r in self.runs:
            if key in r.config:
                return r.config[key]
        return None


def group_configurations(records: list[RunRecord], keys: list[str]) -> list[Configuration]:
    groups: dict[str, Configuration] = {}
    for r in records:
        values = tuple(r.config.get(k, MISSING) for k in keys)
        fingerprint = canonical_text(values)
        if fingerprint not in groups:
            groups[fingerprint] = Configuration(values, "", [])
        groups[fingerprint].runs.append(r)
    configs = sorted(groups.values(), key=lambda c: [sort_value(v) for v in c.values])
    for config in configs:
        config.label = make_label(keys, config.values) if keys else family_depth_label(config)
    return configs


def family_depth_label(config: Configuration) -> str:
    """The label of the one configuration when nothing is swept: 'CNN d2', else 'all runs'."""
    family = config.value("model.class_path")
    depth = config.value(DEPTH_KEY)
    if family and depth is not None:
        return f"{value_text('model.class_path', family)} {SHORT[DEPTH_KEY]}{depth}"
    return "all runs"


def score_stats(values: list[float]) -> dict:
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "min": float(array.min()),
        "max": float(array.max()),
        "std": float(array.std()),
    }


def configuration_numbers(config: Configuration, keys: list[str], include_unfitted: bool) -> dict:
    used = config.used(include_unfitted)
    scores = [r.scores() for r in used]
    names = sorted({name for s in scores for name in s})
    stats = {name: score_stats([s[name] for s in scores if name in s]) for name in names}
    losses = [r.final_loss for r in config.runs if r.final_loss is not None]
    params = next((r.params for r in config.runs if r.params is not None), None)
    return {
        "label": config.label,
        "values": dict(zip(keys, config.values, strict=True)),
        "seeds": sorted({r.seed for r in used if r.seed is not None}),
        "all_seeds": sorted({r.seed for r in config.runs if r.seed is not None}),
        "runs": len(config.runs),
        "fitted": sum(r.fitted is True for r in config.runs),
        "used": len(used),
        "final_loss_max": max(losses) if losses else None,
        # Per used run, in seed order: the first hidden layer that lost the input (None: the
        # input reaches the output); runs that did not measure it are left out.
        "input_lost_at": [
            r.input_lost_at
            for r in sorted(used, key=lambda r: sort_value(r.seed))
            if r.layers_measured
        ],
        "params": params,
        "mean": {k: v["mean"] for k, v in stats.items()},
        "min": {k: v["min"] for k, v in stats.items()},
        "max": {k: v["max"] for k, v in stats.items()},
        "std": {k: v["std"] for k, v in stats.items()},
    }


def mechanism_note(number: dict) -> str | None:
    """A note where the seeds of one configuration reach their outputs differently (some lose
    the input at a hidden layer, some carry it through): their means mix two mechanisms."""
    lost = number["input_lost_at"]
    blind = [layer for layer in lost if layer is not None]
    if not blind or len(blind) == len(lost):  # every seed lost it (at whatever layer)
        return None
    at = ", ".join(str(layer) for layer in sorted(set(blind)))
    return (
        f"{number['label']}: {len(blind)} of {len(lost)} runs lose the input at a hidden layer "
        f"({at}), the others carry it to the output: the means mix two mechanisms"
    )


# --- problems -----------------------------------------------------------------------------------
# Where the problem list puts a broken run whose files do not say its configuration.
NO_CONFIGURATION = "configuration unknown"


def placed(record: RunRecord) -> bool:
    """Whether a run can join a configuration: a broken run with no config at all (its
    config.yaml unreadable, or a folder that cannot be listed) is only a problem, not a row."""
    return bool(record.config) or record.status != run_folder.BROKEN


def broken_kind(run: RunRecord) -> str:
    return "broken sweep cell" if run.cell else "broken run"


def unplaced_problems(records: list[RunRecord]) -> list[dict]:
    """The problems of the runs that are in no configuration (see `placed`)."""
    return [
        {
            "kind": broken_kind(run),
            "configuration": NO_CONFIGURATION,
            "seed": run.seed,
            "source": shown_path(run.source),
            "detail": f"{run.error}" + (f"; log: {shown_path(run.log)}" if run.log else ""),
        }
        for run in records
        if not placed(run)
    ]


def find_problems(configs: list[Configuration], include_unfitted: bool) -> list[dict]:
    """Everything that is not a clean result, by name: nothing is dropped silently."""
    problems = []

    def add(kind: str, config: Configuration, run: RunRecord | None, detail: str) -> None:
        problems.append(
            {
                "kind": kind,
                "configuration": config.label,
                "seed": None if run is None else run.seed,
                "source": None if run is None else shown_path(run.source),
                "detail": detail,
            }
        )

    all_seeds = {r.seed for c in configs for r in c.runs if r.seed is not None}
    for config in configs:
        for run in config.runs:
            log = f"; log: {shown_path(run.log)}" if run.log else ""
            if run.status == run_folder.BROKEN:
                add(broken_kind(run), config, run, f"{run.error}{log}")
            elif run.status != run_folder.OK:
                add(run.status, config, run, f"{run.error or 'no error recorded'}{log}")
            elif not run.metrics:
                add("no scores", config, run, f"status ok but no test scores{log}")
            elif run.fitted is not True:
                use = "included in" if include_unfitted and run.fitted is False else "excluded from"
                add("not fitted", config, run, f"{not_fitted_detail(run)}; {use} the means")
        seeds = [r.seed for r in config.runs if r.seed is not None]
        for seed in sorted(set(seeds), key=sort_value):
            if seeds.count(seed) > 1:
                sources = [r.source for r in config.runs if r.seed == seed]
                add(
                    "duplicate seed",
                    config,
                    None,
                    f"seed {seed} in {len(sources)} runs: " + ", ".join(sources),
                )
        missing = sorted(all_seeds - set(seeds), key=sort_value)
        if missing:
            have = ", ".join(map(str, sorted(all_seeds, key=sort_value)))
            add(
                "missing seeds",
                config,
                None,
                f"no run for seed(s) {', '.join(map(str, missing))} "
                f"(other configurations have {have})",
            )
    return problems


def run_outcome(run: RunRecord) -> str:
    """One word or two for how a run ended: its status, "no scores", "not fitted" or "fitted"."""
    if run.status != run_folder.OK:
        return run.status
    if not run.metrics:
        return "no scores"
    return "fitted" if run.fitted is True else "not fitted"


def nothing_fitted(records: list[RunRecord]) -> str | None:
    """'no run fitted its image: 4 runs, all not fitted' when no run fitted; else None."""
    outcomes = [run_outcome(r) for r in records]
    if not outcomes or "fitted" in outcomes:
        return None
    counts = {o: outcomes.count(o) for o in sorted(set(outcomes), key=outcomes.index)}
    runs = f"{len(outcomes)} run{'s' if len(outcomes) != 1 else ''}"
    if len(counts) == 1:
        return (
            f"no run fitted its image: {runs}, {'all ' if len(outcomes) > 1 else ''}{outcomes[0]}"
        )
    return f"no run fitted its image: {runs}: " + ", ".join(f"{n} {o}" for o, n in counts.items())


def not_fitted_detail(run: RunRecord) -> str:
    if run.fitted is None:
        return "the run does not say whether it fitted"
    if run.final_loss is not None:
        return f"final training MSE {run.final_loss:.3g} > {run.fit_threshold:g}"
    return "final training MSE above the fit threshold"


def problem_line(problem: dict) -> str:
    """A problem as one console line: 'kind: [configuration, seed N] source: detail'."""
    where = problem["configuration"]
    if problem["seed"] is not None:
        where += f", seed {problem['seed']}"
    source = f" {problem['source']}:" if problem["source"] else ""
    return f"{problem['kind']}: [{where}]{source} {problem['detail']}"
