"""`identity-crisis report`: the paper's figures and a summary table from many runs.

    identity-crisis report runs/sweeps/fig3_cnn_depth                     # an offline sweep
    identity-crisis report runs/sweeps/fig3_cnn_depth --seed 1 --hidden 7,14,20 --out runs/fig3
    identity-crisis report runs/sweeps/fig2_fcn --key model.depth --key model.activation
    identity-crisis report --wandb-sweep ENTITY/PROJECT/SWEEP_ID          # a W&B sweep

It collects every run folder (a folder with `metrics.json`) under each PATH and every sweep cell
of the offline runner that has no result, or the runs of a W&B sweep, groups the runs into
configurations (runs that share every config value but the seed), and writes into --out
(default runs/report):

- `prediction_grid.png`: paper figures 2/3, one row per configuration, for one seed;
- `hidden_<label>.png`: paper figure 4, the hidden maps at initialization beside the trained ones;
- `curves_<key>`, `verdicts_<key>`, `curves_params` (.png and .svg) and, with two swept keys,
  `heatmap_<key1>_<key2>_<score>`: the scores against the swept key(s) and the parameter count;
- `summary.md`: one table row per configuration, then every problem (failed, crashed, unfitted
  runs, broken sweep cells, missing seeds), which are NAMED there and left out of the means;
- `report.json`: the numbers behind the table and the plots.

The swept keys are the config keys whose values differ between runs (bookkeeping such as the
seed, `run.*` and `data.root` aside), unless `--key` names them; then another varying key joins
the rows only where it would merge different runs, and a key with one value per row is named in a
note. With `--wandb-sweep`, the figures also go to a new W&B run (job_type "report", grouped
under the sweep id).

Exit codes: 0 written (problems are listed, not fatal); 2 a bad argument or nothing to report.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter
from PIL import Image, ImageDraw, ImageFont

from datamodules.single_example import TEST_SETS
from identity_crisis.cli import flatten_config
from identity_crisis.errors import ConfigError, int_list
from identity_crisis.images import image_grid, save_png
from identity_crisis.jsonio import write_json
from identity_crisis.sweep import DONE, FAILED, LOG, RUN
from identity_crisis.tracking import load_env_file, resolve_wandb_mode
from lightning_modules.callbacks import HIDDEN_INIT, HIDDEN_TRAINED, METRICS_FILE, PROBE_PREDICTIONS

DEFAULT_OUT = "runs/report"
SEED_KEY = "seed_everything"
DEPTH_KEY = "model.depth"
CONFIG_FILE = "config.yaml"
# Keys that never make two runs different experiments: where a run was written, how it was
# scheduled and what it printed. Keys with a "/" are W&B hyperparameters logged by the run itself
# (model/params), keys with a leading "_" W&B's own.
BOOKKEEPING = {
    SEED_KEY,
    "config",
    "ckpt_path",
    "weights_only",
    "data.root",
    "data.download",
    "data.batch_size",  # test batching: the scores are sums over images either way
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.enable_checkpointing",
    "trainer.log_every_n_steps",
    "trainer.profiler",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
}
BOOKKEEPING_PREFIXES = ("run.",)
# Default order of the swept keys (the first is the x axis and the outer sort of the rows).
KEY_PRIORITY = (
    "model.depth",
    "model.channels",
    "model.width",
    "model.kernel_size",
    "model.block_size",
    "model.lr",
    "data.num_train",
)
# How a key reads in a row label with several keys: "d5", "c128"; strings read as themselves.
SHORT = {
    "model.depth": "d",
    "model.channels": "c",
    "model.width": "w",
    "model.kernel_size": "k",
    "model.block_size": "b",
    "model.lr": "lr",
    "model.momentum": "m",
    "model.warmup_steps": "wu",
    "data.num_train": "n",
    "trainer.max_steps": "steps",
}
SET_ORDER = TEST_SETS
TABLE_SETS = (("mnist", "mnist"), ("fashion", "fashion"), ("patterns", "patterns"))
TABLE_SETS += (("gaussian_noise", "noise"),)
CORRS = ("identity_corr", "constant_corr")
VERDICT_FRACS = ("frac_identity", "frac_constant", "frac_neither")
VERDICT_COLOURS = {"frac_identity": "tab:green", "frac_constant": "tab:red"}
VERDICT_COLOURS["frac_neither"] = "tab:gray"
ALL_SETS = "all"  # test/all/<score>: a run's score averaged over its test sets
GRID_SCALE, GRID_PAD = 3, 2
HIDDEN_GAP, HIDDEN_STRIP = 16, 30
MISSING = None  # a key a run's config does not have reads as None, shown "-"
HIDDEN_FILES = {"init": HIDDEN_INIT, "trained": HIDDEN_TRAINED}


# --- the in-memory record: one per run, whether from a folder or from W&B ----------------------
@dataclass
class RunRecord:
    """One run (or one sweep cell that produced none), wherever it came from.

    `source` is what the problem list names: a run folder, a sweep cell folder or a W&B run path.
    A record built from a sweep cell's parameters alone has `partial_config`: its keys are the
    swept ones only, so it cannot tell which other keys are constant.
    """

    source: str
    config: dict
    status: str
    error: str | None = None
    fitted: bool | None = None
    final_loss: float | None = None
    params: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    log: str | None = None
    partial_config: bool = False
    predictions: Callable[[], dict | None] = field(default=lambda: None, repr=False)
    hidden: Callable[[str], Image.Image | None] = field(default=lambda kind: None, repr=False)

    @property
    def seed(self):
        return self.config.get(SEED_KEY)

    @property
    def fit_threshold(self) -> float:
        return self.config.get("model.fit_threshold") or 1e-3

    def usable(self, include_unfitted: bool = False) -> bool:
        """Counts in the means: finished with scores, and fitted (an unfitted run's scores are
        not evidence of anything)."""
        return (
            self.status == "ok"
            and bool(self.metrics)
            and (self.fitted is True or (include_unfitted and self.fitted is False))
        )

    def scores(self) -> dict[str, float]:
        """The test scores plus test/all/<score>: the mean over the run's test sets."""
        by_score: dict[str, list[float]] = {}
        for key, value in self.metrics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "test" and parts[1] != ALL_SETS:
                by_score.setdefault(parts[2], []).append(value)
        averaged = {f"test/{ALL_SETS}/{k}": float(np.mean(v)) for k, v in by_score.items()}
        return {**self.metrics, **averaged}


def _number(value) -> float | None:
    """A JSON number; null (a non-finite float) and anything else non-numeric read as None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _test_metrics(source: dict) -> dict[str, float]:
    metrics = {}
    for key, value in source.items():
        number = _number(value)
        if isinstance(key, str) and key.startswith("test/") and number is not None:
            metrics[key] = number
    return dict(sorted(metrics.items()))


def _load_npz(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _load_png(path: Path) -> Image.Image | None:
    return Image.open(path).convert("RGB") if path.is_file() else None


# --- local folders ------------------------------------------------------------------------------
def _is_cell(folder: Path, filenames: list[str]) -> bool:
    if DONE in filenames or FAILED in filenames:
        return True
    # A cell that is still running (or was killed) has only the runner's log, which starts with
    # the command line.
    if LOG in filenames:
        with open(folder / LOG, errors="replace") as log:
            return log.readline().startswith("$ ")
    return False


def _cell_params(cell: Path) -> dict:
    """The cell's swept values: from done.json / failed.json, else from the logged command."""
    for name in (DONE, FAILED):
        if (cell / name).is_file():
            try:
                return dict(json.loads((cell / name).read_text()).get("params") or {})
            except (json.JSONDecodeError, OSError):
                break
    params = {}
    if (cell / LOG).is_file():
        with open(cell / LOG, errors="replace") as log:
            first = log.readline().removeprefix("$ ")
        try:
            words = shlex.split(first)
        except ValueError:
            words = []
        for word in words:
            if word.startswith("--") and "=" in word and not word.startswith("--run."):
                key, value = word[2:].split("=", 1)
                params[key] = yaml.safe_load(value)
    return params


def _run_record(folder: Path) -> RunRecord:
    try:
        summary = json.loads((folder / METRICS_FILE).read_text())
    except (json.JSONDecodeError, OSError) as error:
        summary = {"status": "broken", "error": f"unreadable {METRICS_FILE}: {error}"}
    config, partial = {}, False
    if (folder / CONFIG_FILE).is_file():
        config = flatten_config(yaml.safe_load((folder / CONFIG_FILE).read_text()) or {})
    else:
        partial = True
    fitted = summary.get("fitted")
    return RunRecord(
        source=str(folder),
        config=config,
        status=str(summary.get("status", "unknown")),
        error=summary.get("error"),
        fitted=None if fitted is None else bool(fitted),
        final_loss=_number(summary.get("train/final_loss")),
        params=summary.get("model/params"),
        metrics=_test_metrics(summary.get("metrics") or {}),
        partial_config=partial,
        predictions=functools.partial(_load_npz, folder / PROBE_PREDICTIONS),
        hidden=lambda kind, folder=folder: _load_png(folder / HIDDEN_FILES[kind]),
    )


def _cell_record(cell: Path, run: RunRecord | None) -> RunRecord:
    """Join a sweep cell to its run folder, or record the cell itself as broken."""
    params = _cell_params(cell)
    failed = {}
    if (cell / FAILED).is_file():
        try:
            failed = json.loads((cell / FAILED).read_text())
        except (json.JSONDecodeError, OSError):
            failed = {"reason": f"unreadable {FAILED}"}
    log = str(cell / LOG) if (cell / LOG).is_file() else None
    if run is not None:
        run.log = log
        if run.partial_config:
            run.config = {**params, **run.config}
        if failed and run.status == "ok":
            # The runner did not count it as done (e.g. the process died after writing scores).
            run.status, run.error = "broken", failed.get("reason", "the sweep cell failed")
        return run
    if failed:
        reason = failed.get("reason", "the sweep cell failed")
    elif (cell / DONE).is_file():
        reason = f"done.json but no {RUN}/{METRICS_FILE}"
    else:
        reason = "no result yet: still running, or stopped before it finished"
    return RunRecord(
        source=str(cell), config=params, status="broken", error=reason, log=log, partial_config=True
    )


def load_local(paths: list[str], skip: Path | None = None) -> list[RunRecord]:
    """Every run folder and every sweep cell under the paths (each found once)."""
    runs: dict[Path, RunRecord] = {}
    cells: set[Path] = set()
    for path in paths:
        root = Path(path)
        if not root.exists():
            raise ConfigError(f"PATH {path!r} does not exist")
        for dirpath, dirnames, filenames in os.walk(root):
            folder = Path(dirpath).resolve()
            # W&B's run copies, caches and an earlier report are not runs; skipping them also
            # keeps a walk over runs/ quick.
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".")
                and d not in ("wandb", "__pycache__")
                and (skip is None or (folder / d).resolve() != skip)
            )
            if METRICS_FILE in filenames and folder not in runs:
                runs[folder] = _run_record(folder)
            if _is_cell(folder, filenames):
                cells.add(folder)
    records = dict(runs)
    for cell in sorted(cells):
        run_dir = (cell / RUN).resolve()
        records[run_dir] = _cell_record(cell, runs.get(run_dir))
    return [records[key] for key in sorted(records)]


# --- W&B ----------------------------------------------------------------------------------------
def wandb_api():
    """The only place that talks to the W&B server (tests pass a fake API object instead)."""
    import wandb

    try:
        return wandb.Api()
    except Exception as error:  # no key, no network: one line, not a traceback
        raise ConfigError(
            f"cannot use the W&B API ({error}); set WANDB_API_KEY (or run wandb login)"
        ) from None


def parse_sweep_path(path: str) -> tuple[str, str, str]:
    """ENTITY/PROJECT/ID; a sweep URL (.../ENTITY/PROJECT/sweeps/ID) works too."""
    parts = [p for p in re.sub(r"^https?://[^/]+/", "", path).split("/") if p]
    parts = [p for i, p in enumerate(parts) if not (p == "sweeps" and i == len(parts) - 2)]
    if len(parts) != 3:
        raise ConfigError(f"--wandb-sweep {path!r} is not valid; expected ENTITY/PROJECT/SWEEP_ID")
    return parts[0], parts[1], parts[2]


# W&B's run states, for runs whose own summary has no `status` (only failures write one).
WANDB_STATES = {"finished": "ok", "killed": "interrupted"}


def _summary_dict(run) -> dict:
    summary = getattr(run, "summary_metrics", None)
    return dict(summary) if isinstance(summary, dict) else dict(run.summary)


def _config_dict(run) -> dict:
    config = {}
    for key, value in dict(run.config).items():
        if str(key).startswith("_"):
            continue
        # Older API versions hand back {"value": ..., "desc": ...} per key.
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        config[key] = value
    return flatten_config(config)


class _WandbFiles:
    """A run's files, listed once and downloaded on first use into the report's cache."""

    def __init__(self, run, cache: Path):
        self.run, self.cache = run, cache
        self._files = None

    def _find(self, match: Callable[[str], bool]):
        if self._files is None:
            self._files = sorted(self.run.files(), key=lambda f: f.name)
        found = [f for f in self._files if match(f.name)]
        return found[-1] if found else None

    def path(self, match: Callable[[str], bool]) -> Path | None:
        file = self._find(match)
        if file is None:
            return None
        self.cache.mkdir(parents=True, exist_ok=True)
        file.download(root=str(self.cache), replace=True)
        return self.cache / file.name

    def predictions(self) -> dict | None:
        path = self.path(lambda name: name == PROBE_PREDICTIONS)
        return None if path is None else _load_npz(path)

    def hidden(self, kind: str) -> Image.Image | None:
        # ProbePanels logs the panels as images under panels/<stem>.
        prefix = f"media/images/panels/hidden_{kind}"
        path = self.path(lambda name: name.startswith(prefix) and name.endswith(".png"))
        return None if path is None else _load_png(path)


def load_wandb_sweep(sweep_path: str, api, cache: Path) -> list[RunRecord]:
    """The runs of a W&B sweep as RunRecords: config from run.config, scores from run.summary,
    the probe predictions and hidden panels from the run's files when needed."""
    entity, project, sweep_id = parse_sweep_path(sweep_path)
    try:
        runs = list(api.sweep(f"{entity}/{project}/{sweep_id}").runs)
    except Exception as error:  # the API's errors vary by version; say which sweep failed
        raise ConfigError(f"--wandb-sweep {sweep_path!r}: cannot read the sweep: {error}") from None
    records = []
    for run in runs:
        summary, config = _summary_dict(run), _config_dict(run)
        state = str(getattr(run, "state", "finished"))
        status = str(summary.get("status") or WANDB_STATES.get(state, state))
        metrics = _test_metrics(summary)
        error = summary.get("error")
        if status == "ok" and not metrics:
            status, error = "broken", f"W&B state {state} but no test scores in the summary"
        elif status != "ok" and not error:
            error = f"W&B state {state}"
        fitted = summary.get("train/fitted")
        files = _WandbFiles(run, cache / str(run.id))
        records.append(
            RunRecord(
                source=f"{entity}/{project}/{run.id} ({run.name})",
                config=config,
                status=status,
                error=error,
                fitted=None if fitted is None else bool(fitted),
                final_loss=_number(summary.get("train/final_loss")),
                params=summary.get("model/params", config.get("model/params")),
                metrics=metrics,
                predictions=files.predictions,
                hidden=files.hidden,
            )
        )
    return records


def log_report_to_wandb(out: Path, files: list[Path], sweep_path: str, table: dict) -> None:
    """The report's figures and table as a new W&B run beside the sweep's runs."""
    import wandb

    entity, project, sweep_id = parse_sweep_path(sweep_path)
    run = wandb.init(
        entity=entity,
        project=project,
        group=sweep_id,
        job_type="report",
        name=f"report-{sweep_id}",
        dir=str(out),
        config={"sweep": f"{entity}/{project}/{sweep_id}"},
        settings=wandb.Settings(quiet=True),
    )
    images = {f"report/{p.stem}": wandb.Image(str(p)) for p in files if p.suffix == ".png"}
    run.log({**images, "report/summary": wandb.Table(**table)})
    run_path = Path(run.dir).parent
    offline = run.settings.mode == "offline" or run.offline
    run.finish()
    if offline:
        print(f"W&B ran offline; upload the report run with: wandb sync {run_path}")


# --- from records to configurations -------------------------------------------------------------
def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _is_bookkeeping(key: str) -> bool:
    return (
        key in BOOKKEEPING
        or key.startswith(BOOKKEEPING_PREFIXES)
        or "/" in key
        or key.startswith("_")
    )


def _is_numeric(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sort_value(value):
    if value is None:
        return (3, 0, "")
    if isinstance(value, bool):
        return (0, int(value), "")
    if _is_numeric(value):
        return (1, value, "")
    return (2, 0, str(value) if isinstance(value, str) else _canon(value))


def _key_values(records: list[RunRecord], key: str) -> set[str]:
    values = set()
    for r in records:
        if not r.partial_config or key in r.config:
            values.add(_canon(r.config.get(key, MISSING)))
    return values


def swept_keys(
    records: list[RunRecord], requested: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """(keys, also, follow): the keys the report is ordered and plotted by; the keys that vary
    beyond those the user asked for and would merge configurations (appended to keys); and the
    keys that vary but take one value per configuration of the asked-for keys (a budget raised
    for one depth only), which cannot merge anything and are named in a note instead."""
    known = sorted({k for r in records for k in r.config})
    varying = [k for k in known if not _is_bookkeeping(k) and len(_key_values(records, k)) > 1]

    def order(key: str):
        values = [r.config.get(key) for r in records if r.config.get(key) is not None]
        numeric = bool(values) and all(_is_numeric(v) for v in values)
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
    follow = [k for k in extra if _follows(records, keys, k)]
    also = [k for k in extra if k not in follow]
    return keys + also, also, follow


def _follows(records: list[RunRecord], keys: list[str], key: str) -> bool:
    """Whether `key` takes one value within each configuration of `keys`."""
    seen: dict[tuple, str] = {}
    for r in records:
        group = tuple(_canon(r.config.get(k, MISSING)) for k in keys)
        value = _canon(r.config.get(key, MISSING))
        if seen.setdefault(group, value) != value:
            return False
    return True


def follow_note(key: str, configs: list[Configuration]) -> str:
    """'trainer.max_steps (one value per row): 12000 for depth 1; 5000 for depth 3, depth 5'."""
    rows: dict[str, list[str]] = {}
    for config in configs:
        rows.setdefault(_show(key, config.value(key)), []).append(config.label)
    parts = [f"{value} for {', '.join(labels)}" for value, labels in rows.items()]
    return f"{key} (one value per row): {'; '.join(parts)}"


def _short_name(key: str, keys: list[str]) -> str:
    last = key.rsplit(".", 1)[-1]
    clash = sum(k.rsplit(".", 1)[-1] == last for k in keys) > 1
    return key.replace(".", "_") if clash else last


def _show(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "model.class_path" and isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if isinstance(value, str | int) else _canon(value)


def make_label(keys: list[str], values: tuple) -> str:
    """'depth 5' for one key; 'linear d2' for several (strings first, numbers abbreviated)."""
    if len(keys) == 1:
        return f"{keys[0].rsplit('.', 1)[-1]} {_show(keys[0], values[0])}"
    words, numbers = [], []
    for key, value in zip(keys, values, strict=True):
        if isinstance(value, bool):
            words.append(key.rsplit(".", 1)[-1] if value else f"no {key.rsplit('.', 1)[-1]}")
        elif isinstance(value, str):
            words.append(_show(key, value))
        else:
            prefix = SHORT.get(key, key.rsplit(".", 1)[-1] + "=")
            numbers.append(f"{prefix}{_show(key, value)}")
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
        fingerprint = _canon(values)
        if fingerprint not in groups:
            groups[fingerprint] = Configuration(values, "", [])
        groups[fingerprint].runs.append(r)
    configs = sorted(groups.values(), key=lambda c: [_sort_value(v) for v in c.values])
    for config in configs:
        config.label = make_label(keys, config.values) if keys else _single_label(config)
    return configs


def _single_label(config: Configuration) -> str:
    family = config.value("model.class_path")
    depth = config.value(DEPTH_KEY)
    if family and depth is not None:
        return f"{_show('model.class_path', family)} d{depth}"
    return "all runs"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-") or "run"


def _stats(values: list[float]) -> dict:
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
    stats = {name: _stats([s[name] for s in scores if name in s]) for name in names}
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
        "params": params,
        "mean": {k: v["mean"] for k, v in stats.items()},
        "min": {k: v["min"] for k, v in stats.items()},
        "max": {k: v["max"] for k, v in stats.items()},
        "std": {k: v["std"] for k, v in stats.items()},
    }


# --- problems -----------------------------------------------------------------------------------
def find_problems(configs: list[Configuration], include_unfitted: bool) -> list[dict]:
    """Everything that is not a clean result, by name: nothing is dropped silently."""
    problems = []

    def add(kind: str, config: Configuration, run: RunRecord | None, detail: str) -> None:
        problems.append(
            {
                "kind": kind,
                "configuration": config.label,
                "seed": None if run is None else run.seed,
                "source": None if run is None else run.source,
                "detail": detail,
            }
        )

    all_seeds = {r.seed for c in configs for r in c.runs if r.seed is not None}
    for config in configs:
        for run in config.runs:
            log = f"; log: {run.log}" if run.log else ""
            if run.status == "broken":
                kind = "broken sweep cell" if run.log or run.partial_config else "broken run"
                add(kind, config, run, f"{run.error}{log}")
            elif run.status != "ok":
                add(run.status, config, run, f"{run.error or 'no error recorded'}{log}")
            elif not run.metrics:
                add("no scores", config, run, f"status ok but no test scores{log}")
            elif run.fitted is not True:
                use = "included in" if include_unfitted and run.fitted is False else "excluded from"
                if run.fitted is None:
                    detail = "the run does not say whether it fitted"
                else:
                    detail = (
                        f"final training MSE {run.final_loss:.3g} > {run.fit_threshold:g}"
                        if run.final_loss is not None
                        else "final training MSE above the fit threshold"
                    )
                add("not fitted", config, run, f"{detail}; {use} the means")
        seeds = [r.seed for r in config.runs if r.seed is not None]
        for seed in sorted(set(seeds), key=_sort_value):
            if seeds.count(seed) > 1:
                sources = [r.source for r in config.runs if r.seed == seed]
                add(
                    "duplicate seed",
                    config,
                    None,
                    f"seed {seed} in {len(sources)} runs: " + ", ".join(sources),
                )
        missing = sorted(all_seeds - set(seeds), key=_sort_value)
        if missing:
            have = ", ".join(map(str, sorted(all_seeds, key=_sort_value)))
            add(
                "missing seeds",
                config,
                None,
                f"no run for seed(s) {', '.join(map(str, missing))} "
                f"(other configurations have {have})",
            )
    return problems


def problem_line(problem: dict) -> str:
    where = problem["configuration"]
    if problem["seed"] is not None:
        where += f", seed {problem['seed']}"
    source = f" {problem['source']}:" if problem["source"] else ""
    return f"{problem['kind']}: [{where}]{source} {problem['detail']}"


# --- figures ------------------------------------------------------------------------------------
def _pick_run(config: Configuration, seed) -> RunRecord | None:
    """The run drawn for this seed: a fitted one first, then any finished one."""
    runs = [r for r in config.runs if r.seed == seed]
    for wanted in (lambda r: r.usable(), lambda r: r.status == "ok"):
        for run in runs:
            if wanted(run):
                return run
    return runs[0] if runs else None


def _as_rows(arrays: list[np.ndarray | None]) -> list[torch.Tensor]:
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


def prediction_grid(configs: list[Configuration], seed, out: Path) -> tuple[Path | None, dict]:
    """Paper figures 2/3: the inputs, then one row of outputs per configuration."""
    labels, outputs, sources = [], [], []
    inputs = None
    for config in configs:
        run = _pick_run(config, seed)
        data = run.predictions() if run is not None and run.status == "ok" else None
        if data is not None and inputs is None:
            inputs = data["inputs"]
        if run is None:
            note = " (no run)"
        elif data is None:
            note = f" ({run.status})" if run.status != "ok" else " (no predictions)"
        else:
            note = "" if run.fitted else " (unfit)"
        labels.append(config.label + note)
        outputs.append(None if data is None else data["outputs"])
        sources.append(None if run is None else run.source)
    info = {
        "seed": seed,
        "rows": [{"label": lb, "source": s} for lb, s in zip(labels, sources, strict=True)],
    }
    if inputs is None:
        return None, info
    rows = _as_rows([inputs, *outputs])
    grid = image_grid(
        rows, row_labels=["input", *labels], divider_after=0, scale=GRID_SCALE, pad=GRID_PAD
    )
    info.update(scale=GRID_SCALE, pad=GRID_PAD, columns=int(rows[0].shape[0]))
    return save_png(grid, out / "prediction_grid.png"), info


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def hidden_figure(init: Image.Image | None, trained: Image.Image, title: str) -> Image.Image:
    """Paper figure 4: the net at initialization beside the trained net, a label strip on top."""
    panels = [("at initialization (random)", init), ("trained", trained)]
    panels = [(name, image) for name, image in panels if image is not None]
    width = sum(image.width for _, image in panels) + HIDDEN_GAP * (len(panels) - 1)
    height = HIDDEN_STRIP + max(image.height for _, image in panels)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(HIDDEN_STRIP * 2 // 3)
    x = 0
    for name, image in panels:
        canvas.paste(image, (x, HIDDEN_STRIP))
        draw.text((x + 4, 3), f"{title}: {name}", fill="black", font=font)
        x += image.width + HIDDEN_GAP
    return canvas


def hidden_choice(configs: list[Configuration], depths: list[int] | None) -> list[Configuration]:
    """The configurations of the hidden-map figures: every one of each --hidden depth, by default
    the first configuration of the smallest depth and the last of the largest."""
    with_depth = [c for c in configs if _is_numeric(c.value(DEPTH_KEY))]
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


def hidden_figures(chosen: list[Configuration], seed, out: Path) -> tuple[list[Path], list[str]]:
    """hidden_<label>.png per chosen configuration, for the run of `seed`."""
    files, notes = [], []
    for config in chosen:
        run = _pick_run(config, seed)
        trained = run.hidden("trained") if run is not None else None
        if trained is None:
            notes.append(f"no hidden maps for {config.label}, seed {seed} (FCN runs have none)")
            continue
        figure = hidden_figure(run.hidden("init"), trained, f"{config.label}, seed {seed}")
        path = out / f"hidden_{_slug(config.label)}.png"
        figure.save(path)
        files.append(path)
    return files, notes


def _figure(**kwargs) -> Figure:
    """A figure on the Agg canvas: files only, no pyplot, no window, no global state."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _finish_axes(fig: Figure) -> None:
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


def _legend(axes: np.ndarray) -> None:
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


def _save(fig: Figure, out: Path, name: str) -> list[Path]:
    _finish_axes(fig)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, dpi=110)
    return paths


def _sets_present(numbers: list[dict]) -> list[str]:
    sets = {k.split("/")[1] for n in numbers for k in n["mean"] if k.count("/") == 2}
    sets.discard(ALL_SETS)
    return sorted(sets, key=lambda s: (SET_ORDER.index(s) if s in SET_ORDER else 99, s))


class _Axis:
    """x positions for one key: its values when numeric (log when they span decades), else
    evenly spaced categories."""

    def __init__(self, values: list, label: str, log: bool | None = None):
        present = sorted({_canon(v): v for v in values if v is not None}.values(), key=_sort_value)
        self.numeric = bool(present) and all(_is_numeric(v) for v in present)
        self.categories = present
        self.label = label
        positive = self.numeric and min(present) > 0
        self.log = log if log is not None else positive and max(present) / min(present) >= 20

    def x(self, value):
        if value is None:
            return None
        return value if self.numeric else [_canon(c) for c in self.categories].index(_canon(value))

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
            ax.set_xticks(self.categories, [_compact(v) for v in self.categories])
        elif all(isinstance(v, int) for v in self.categories):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _compact(value) -> str:
    """2061 -> 2.1k, 3687936 -> 3.7M: tick labels of parameter counts that do not collide."""
    if isinstance(value, int) and abs(value) >= 1000:
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _line(ax, points: list[tuple], metric: str, label: str, colour) -> None:
    """Mean over seeds with the min-max band; points are (x, numbers)."""
    points = sorted(
        (p for p in points if p[0] is not None and metric in p[1]["mean"]), key=lambda p: p[0]
    )
    if not points:
        return
    xs = [p[0] for p in points]
    ax.plot(xs, [p[1]["mean"][metric] for p in points], marker="o", ms=3, color=colour, label=label)
    lo = [p[1]["min"][metric] for p in points]
    hi = [p[1]["max"][metric] for p in points]
    ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, linewidth=0)


def _groups(numbers: list[dict], keys: list[str]) -> dict[str, list[dict]]:
    """Configurations by their values of `keys` (the non-x keys): one line each."""
    groups: dict[str, list[dict]] = {}
    for n in numbers:
        label = make_label(keys, tuple(n["values"][k] for k in keys)) if keys else "all"
        groups.setdefault(label, []).append(n)
    return groups


def _colours(count: int):
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "viridis"]
    return [cmap(i if count <= 10 else i / max(count - 1, 1)) for i in range(count)]


def curves_figure(numbers: list[dict], axis: _Axis, x_of, rest: list[str], title: str) -> Figure:
    """identity_corr and constant_corr against x. One key: a line per test set. Several keys:
    a panel per test set and a line per value of the other keys."""
    sets = _sets_present(numbers)
    groups = _groups(numbers, rest)
    per_group = bool(rest)
    columns = len(sets) if per_group else 1
    fig = _figure(figsize=(3.6 * columns + 1.5, 6.2))
    axes = np.atleast_2d(fig.subplots(2, columns, squeeze=False, sharex=True))
    for row, score in enumerate(CORRS):
        if per_group:
            colours = _colours(len(groups))
            for col, name in enumerate(sets):
                ax = axes[row, col]
                for (label, members), colour in zip(groups.items(), colours, strict=True):
                    _line(
                        ax, [(x_of(n), n) for n in members], f"test/{name}/{score}", label, colour
                    )
                ax.set_title(f"{name}: {score}", fontsize=9)
        else:
            ax = axes[row, 0]
            for name, colour in zip(sets, _colours(len(sets)), strict=True):
                _line(ax, [(x_of(n), n) for n in numbers], f"test/{name}/{score}", name, colour)
            ax.set_title(score)
        for ax in axes[row]:
            # Correlations can go negative; show how far, but always the 0-1 range.
            ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
            ax.axhline(0, color="black", lw=0.5)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        axis.style(ax)
    _legend(axes)
    fig.suptitle(f"{title} (mean over seeds, band: min-max)")
    return fig


def verdicts_figure(numbers: list[dict], axis: _Axis, x_of, rest: list[str]) -> Figure:
    """The verdict fractions against x, for MNIST and for all test sets averaged."""
    places = (("mnist", "mnist"), (ALL_SETS, "all test sets averaged"))
    groups = _groups(numbers, rest)
    if not rest:
        fig = _figure(figsize=(10, 3.8))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (name, title) in zip(axes, places, strict=True):
            for frac in VERDICT_FRACS:
                points = [(x_of(n), n) for n in numbers]
                _line(
                    ax,
                    points,
                    f"test/{name}/{frac}",
                    frac.removeprefix("frac_"),
                    VERDICT_COLOURS[frac],
                )
            ax.set_title(title)
        _legend(axes)
        axes = np.array([axes])
    else:
        fig = _figure(figsize=(13, 6.4))
        axes = fig.subplots(2, 3, sharex=True, sharey=True)
        colours = _colours(len(groups))
        for r, (name, title) in enumerate(places):
            for c, frac in enumerate(VERDICT_FRACS):
                for (label, members), colour in zip(groups.items(), colours, strict=True):
                    _line(
                        axes[r, c],
                        [(x_of(n), n) for n in members],
                        f"test/{name}/{frac}",
                        label,
                        colour,
                    )
                axes[r, c].set_title(f"{title}: {frac.removeprefix('frac_')}", fontsize=9)
        _legend(axes)
    for ax in axes.flat:
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        axis.style(ax)
    fig.suptitle("fraction of test images judged identity / constant / neither (mean over seeds)")
    return fig


def heatmap_figure(numbers: list[dict], keys: list[str], score: str) -> Figure:
    """Mean MNIST score over the first two keys, one panel per value of any further keys."""
    k1, k2, rest = keys[0], keys[1], keys[2:]
    xs = _Axis([n["values"][k1] for n in numbers], k1).categories
    ys = _Axis([n["values"][k2] for n in numbers], k2).categories
    groups = _groups(numbers, rest)
    fig = _figure(
        figsize=(max(4.0, 0.7 * len(xs) + 2) * len(groups), max(3.0, 0.45 * len(ys) + 1.5))
    )
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    metric = f"test/mnist/{score}"
    for ax, (label, members) in zip(axes, groups.items(), strict=True):
        grid = np.full((len(ys), len(xs)), np.nan)
        for n in members:
            x = (
                [_canon(v) for v in xs].index(_canon(n["values"][k1]))
                if n["values"][k1] is not None
                else None
            )
            y = (
                [_canon(v) for v in ys].index(_canon(n["values"][k2]))
                if n["values"][k2] is not None
                else None
            )
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
        ax.set_xticks(range(len(xs)), [_show(k1, v) for v in xs])
        ax.set_yticks(range(len(ys)), [_show(k2, v) for v in ys])
        ax.set_xlabel(k1)
        ax.set_ylabel(k2)
        ax.set_title(f"mnist {score}" + (f" ({label})" if rest else ""), fontsize=9)
    fig.colorbar(image, ax=list(axes), shrink=0.9)
    return fig


def plot_figures(numbers: list[dict], keys: list[str], out: Path) -> list[Path]:
    files = []
    if keys:
        name = _short_name(keys[0], keys)
        axis = _Axis([n["values"][keys[0]] for n in numbers], keys[0])

        def x_of(n):
            return axis.x(n["values"][keys[0]])

        files += _save(
            curves_figure(numbers, axis, x_of, keys[1:], f"scores against {keys[0]}"),
            out,
            f"curves_{name}",
        )
        files += _save(verdicts_figure(numbers, axis, x_of, keys[1:]), out, f"verdicts_{name}")
    with_params = [n for n in numbers if _is_numeric(n["params"])]
    if with_params:
        axis = _Axis([n["params"] for n in with_params], "parameters (model/params)", log=True)
        files += _save(
            curves_figure(
                with_params,
                axis,
                lambda n: n["params"],
                keys[1:],
                "scores against the parameter count",
            ),
            out,
            "curves_params",
        )
    if len(keys) >= 2:
        short = [_short_name(k, keys) for k in keys[:2]]
        for score in CORRS:
            fig = heatmap_figure(numbers, keys, score)
            files += _save(fig, out, f"heatmap_{short[0]}_{short[1]}_{score}")
    return files


# --- the table ----------------------------------------------------------------------------------
def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def table_rows(numbers: list[dict], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    columns = [_short_name(k, keys) for k in keys] or ["configuration"]
    columns += ["seeds", "fitted/total", "final loss (max)"]
    columns += [f"{title} id / const" for _, title in TABLE_SETS]
    columns += ["mnist verdicts id / const / neither"]
    rows = []
    for n in numbers:
        mean = n["mean"]
        row = [_show(k, n["values"][k]) for k in keys] or [n["label"]]
        row += [
            ", ".join(map(str, n["seeds"])) or "none",
            f"{n['fitted']}/{n['runs']}",
            "-" if n["final_loss_max"] is None else f"{n['final_loss_max']:.2g}",
        ]
        for name, _ in TABLE_SETS:
            row.append(" / ".join(_fmt(mean.get(f"test/{name}/{s}")) for s in CORRS))
        row.append(" / ".join(_fmt(mean.get(f"test/mnist/{f}")) for f in VERDICT_FRACS))
        rows.append(row)
    return columns, rows


def summary_markdown(report: dict, columns: list[str], rows: list[list[str]]) -> str:
    keys = ", ".join(f"`{k}`" for k in report["keys"]) or "none (one configuration)"
    used = sum(n["used"] for n in report["configurations"])
    total = sum(n["runs"] for n in report["configurations"])
    which = (
        "finished runs, fitted or not (--include-unfitted)"
        if report["include_unfitted"]
        else "fitted, finished runs only"
    )
    lines = [
        "# identity-crisis report",
        "",
        f"Sources: {', '.join(f'`{s}`' for s in report['sources'])}  ",
        f"Swept keys: {keys}; seeds: {', '.join(map(str, report['seeds'])) or 'none'}  ",
        f"Means over {which}: {used} of {total} runs. Identity / constant columns are mean "
        "correlations of the output with the input / with the training image.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "## Figures",
        "",
    ]
    lines += [f"- [{name}]({name})" for name in report["files"] if not name.endswith(".svg")]
    lines += [f"- note: {note}" for note in report["notes"]]
    lines += ["", f"## Problems ({len(report['problems'])})", ""]
    if not report["problems"]:
        lines.append("None: every run finished and fitted, every configuration has every seed.")
    for problem in report["problems"]:
        where = problem["configuration"] + (
            f", seed {problem['seed']}" if problem["seed"] is not None else ""
        )
        source = f" `{problem['source']}`:" if problem["source"] else ""
        lines.append(f"- **{problem['kind']}** [{where}]{source} {problem['detail']}")
    return "\n".join(lines) + "\n"


# --- the one path from records to outputs -------------------------------------------------------
def build_report(
    records: list[RunRecord],
    out: Path,
    sources: list[str],
    keys: list[str] | None = None,
    seed=None,
    hidden: list[int] | None = None,
    include_unfitted: bool = False,
) -> dict:
    """Write every output for these records into `out`; return report.json's content."""
    keys, also, follow = swept_keys(records, keys or [])
    seeds = sorted({r.seed for r in records if r.seed is not None}, key=_sort_value)
    if seed is None:
        seed = seeds[0] if seeds else None
    elif seed not in seeds:
        raise ConfigError(
            f"--seed {seed} is not a seed of these runs; seeds present: "
            f"{', '.join(map(str, seeds)) or 'none'}"
        )
    configs = group_configurations(records, keys)
    numbers = [configuration_numbers(c, keys, include_unfitted) for c in configs]
    # Checked before anything is written, so a bad --hidden leaves no half report.
    chosen = hidden_choice(configs, hidden)
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out)
    notes = [f"also varying, so kept apart: {', '.join(also)}"] if also else []
    notes += [follow_note(key, configs) for key in follow]
    hidden_files, hidden_notes = hidden_figures(chosen, seed, out)
    grid, grid_info = prediction_grid(configs, seed, out)
    if grid is None:
        notes.append(f"no prediction grid: no run of seed {seed} has {PROBE_PREDICTIONS}")
    notes += hidden_notes
    files = ([grid] if grid else []) + hidden_files + plot_figures(numbers, keys, out)
    report = {
        "sources": sources,
        "keys": keys,
        "seed": seed,
        "seeds": seeds,
        "include_unfitted": include_unfitted,
        "configurations": numbers,
        "problems": find_problems(configs, include_unfitted),
        "grid": grid_info,
        "notes": notes,
        "files": [p.name for p in files],
    }
    columns, rows = table_rows(numbers, keys)
    (out / "summary.md").write_text(summary_markdown(report, columns, rows))
    report["table"] = {"columns": columns, "data": rows}
    write_json(out / "report.json", report)
    return report


def _remove_previous(out: Path) -> None:
    """A report written again into the same folder must not leave the last one's figures (say
    a hidden map of a depth no longer asked for) beside the new ones; only the files the last
    report.json lists are removed, never anything else of the user's."""
    try:
        previous = json.loads((out / "report.json").read_text()).get("files", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    for name in previous:
        if isinstance(name, str) and name == Path(name).name:
            (out / name).unlink(missing_ok=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="identity-crisis report",
        description="Figures and a summary table from run folders, offline sweeps or a W&B sweep.",
        # The module docstring's examples, as written.
        epilog="examples:\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="folders holding run folders")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        help="a swept key to order and plot by (repeat, or comma-separate; default: every key "
        "that differs between runs)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the prediction grid")
    parser.add_argument(
        "--hidden", type=int_list, default=None, help="model.depth values of the hidden-map figures"
    )
    parser.add_argument(
        "--wandb-sweep",
        default=None,
        metavar="ENTITY/PROJECT/ID",
        help="read a W&B sweep's runs and log the figures to a new W&B run",
    )
    parser.add_argument(
        "--include-unfitted",
        action="store_true",
        help="count runs that did not fit in the means (still listed as problems)",
    )
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb_sweep:
        parser.error("give at least one PATH or --wandb-sweep ENTITY/PROJECT/ID")
    args.key = [k.strip() for arg in args.key for k in arg.split(",") if k.strip()]
    return args


def main(argv: list[str] | None = None, api=None) -> None:
    """`identity-crisis report PATH... [options]`; `api` replaces wandb.Api() (tests)."""
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    out = Path(args.out).resolve()
    try:
        records = load_local(args.paths, skip=out) if args.paths else []
        sources = [str(Path(p).resolve()) for p in args.paths]
        if args.wandb_sweep:
            load_env_file()
            records += load_wandb_sweep(args.wandb_sweep, api or wandb_api(), out / "wandb-files")
            sources.append(f"wandb:{args.wandb_sweep}")
        if not records:
            raise ConfigError(
                f"no runs found under {', '.join(sources)}: no {METRICS_FILE} and no sweep cells"
            )
        report = build_report(
            records, out, sources, args.key, args.seed, args.hidden, args.include_unfitted
        )
    except ConfigError as error:
        print(f"identity-crisis report: error: {error}", file=sys.stderr)
        sys.exit(2)

    configs = report["configurations"]
    print(
        f"{sum(c['runs'] for c in configs)} runs in {len(configs)} configuration(s); swept: "
        f"{', '.join(report['keys']) or 'nothing'}; seeds {report['seeds']}; grid seed "
        f"{report['seed']}"
    )
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"problems ({len(report['problems'])}):" if report["problems"] else "problems: none")
    for problem in report["problems"]:
        print(f"  {problem_line(problem)}")
    if args.wandb_sweep:
        resolve_wandb_mode()
        files = [out / name for name in report["files"]]
        log_report_to_wandb(out, files, args.wandb_sweep, report["table"])
    print(f"report: {out / 'summary.md'}")


if __name__ == "__main__":
    main()
