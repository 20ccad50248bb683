"""Runs in: `RunRecord`, one per run, read from local run folders and sweep cells (`load_local`)
or from the runs of a W&B sweep (`load_wandb_sweep`); and the report's own W&B run out
(`log_report_to_wandb`). The files themselves are named and read through `run_folder`."""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from identity_crisis import run_folder
from identity_crisis.errors import ConfigError
from identity_crisis.report import run_files
from identity_crisis.report.run_files import SEED_KEY, BadFile
from lightning_modules.base import DEFAULT_FIT_THRESHOLD
from lightning_modules.metrics import is_test_key, score_key, split_score_key

# test/all/<score>: a run's score averaged over its test sets; "all" is no test set's name.
ALL_SETS = "all"
# The two scores the question is about: how much the output looks like its input (the identity)
# and like the one training image (the constant function). Curves, heatmaps and table show these.
CORRS = ("identity_corr", "constant_corr")
# The run-folder file of each kind of hidden map, as RunRecord.hidden(kind) asks for it.
HIDDEN_FILES = {"init": run_folder.HIDDEN_INIT, "trained": run_folder.HIDDEN_TRAINED}
# W&B's run states, for runs whose own summary has no `status` (only failures write one): a run
# W&B calls finished ended normally (ok); one it killed was stopped by a signal, which a run
# folder records as interrupted. Any other state (crashed, running, ...) is kept as the status.
WANDB_STATES = {"finished": run_folder.OK, "killed": run_folder.INTERRUPTED}


# --- the in-memory record: one per run, whether from a folder or from W&B ----------------------
@dataclass
class RunRecord:
    """One run (or one sweep cell that produced none), wherever it came from.

    `source` is what the problem list names: a run folder, a sweep cell folder or a W&B run path.
    A record built from a sweep cell's parameters alone has `partial_config`: its keys are the
    swept ones only, so it cannot tell which other keys are constant. `cell`: the record came
    with a sweep cell (its own or its run folder's).
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
    cell: bool = False
    # The first hidden layer dead or blind to the input (metrics.json's layers); None when the
    # input reaches the output, or when the run did not measure it (`layers_measured`).
    input_lost_at: int | None = None
    layers_measured: bool = False
    predictions: Callable[[], dict | None] = field(default=lambda: None, repr=False)
    hidden: Callable[[str], Image.Image | None] = field(default=lambda kind: None, repr=False)

    @property
    def seed(self):
        return self.config.get(SEED_KEY)

    @property
    def fit_threshold(self) -> float:
        # The models' default for a run whose config does not record one; it only words the
        # "not fitted" problem.
        return self.config.get("model.fit_threshold") or DEFAULT_FIT_THRESHOLD

    def usable(self, include_unfitted: bool = False) -> bool:
        """Counts in the means: finished with scores, and fitted (an unfitted run's scores are
        not evidence of anything)."""
        return (
            self.status == run_folder.OK
            and bool(self.metrics)
            and (self.fitted is True or (include_unfitted and self.fitted is False))
        )

    def scores(self) -> dict[str, float]:
        """The test scores plus test/all/<score>: the mean over the run's test sets."""
        by_score: dict[str, list[float]] = {}
        for key, value in self.metrics.items():
            split = split_score_key(key)
            if split is not None and split[0] != ALL_SETS:
                by_score.setdefault(split[1], []).append(value)
        averaged = {score_key(ALL_SETS, k): float(np.mean(v)) for k, v in by_score.items()}
        return {**self.metrics, **averaged}


def json_number(value) -> float | None:
    """A JSON number; null (a non-finite float) and anything else non-numeric read as None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def numeric_test_scores(source: dict) -> dict[str, float]:
    """The numeric test/<set>/<score> entries of a metrics dict or a W&B summary, sorted."""
    metrics = {}
    for key, value in source.items():
        number = json_number(value)
        if is_test_key(key) and number is not None:
            metrics[key] = number
    return dict(sorted(metrics.items()))


def mark_broken(record: RunRecord, problems: list[str]) -> None:
    """Make a record broken by these problems (each names its file), keeping what it said."""
    if not problems:
        return
    parts = list(problems)
    if record.status == run_folder.BROKEN and record.error:
        parts.append(record.error)
    elif record.status != run_folder.BROKEN and record.status != run_folder.OK:
        said = f": {record.error}" if record.error else ""
        parts.append(f"{run_folder.METRICS} says {record.status}{said}")
    record.status, record.error = run_folder.BROKEN, "; ".join(parts)


# --- local folders ------------------------------------------------------------------------------
def command_params(cell: Path) -> dict:
    """The swept values from the command on the first line of the cell's log."""
    params = {}
    command = run_files.read_cell_command(cell)
    try:
        words = shlex.split(command or "")
    except ValueError:
        words = []
    for word in words:
        if word.startswith("--") and "=" in word and not word.startswith("--run."):
            key, value = word[2:].split("=", 1)
            try:
                params[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                params[key] = value
    problem = run_files.config_problem(params)
    if problem:
        raise BadFile(run_folder.CELL_LOG, f"the command's {problem}")
    return params


def read_cell(cell: Path) -> tuple[dict, dict, list[str]]:
    """(params, records, problems) of a cell: the swept values, from done.json / failed.json or
    else the logged command; done.json and failed.json by name (None: absent, {}: unreadable);
    what is wrong with any of its files."""
    records, problems, params = {}, [], None
    for name in (run_folder.CELL_DONE, run_folder.CELL_FAILED):
        try:
            records[name] = run_files.read_cell_record(cell, name)
        except BadFile as error:
            records[name] = {}
            problems.append(str(error))
            continue
        if params is None and records[name] is not None:
            params = dict(records[name].get("params", {}))
    if params is None:
        try:
            params = command_params(cell)
        except BadFile as error:
            params = {}
            problems.append(str(error))
    return params, records, problems


def run_folder_record(folder: Path) -> RunRecord:
    """A run folder as a RunRecord; a file that cannot be read or used makes it a broken run."""
    problems = []
    try:
        summary = run_files.read_metrics(folder)
    except BadFile as error:
        summary = {"status": run_folder.BROKEN}
        problems.append(str(error))
    try:
        config = run_files.read_config(folder)
    except BadFile as error:
        config = None
        problems.append(str(error))
    problems += run_files.picture_problems(folder)
    record = RunRecord(
        source=str(folder),
        config=config or {},
        status=summary["status"],
        error=summary.get("error"),
        fitted=summary.get("fitted"),
        final_loss=json_number(summary.get("train/final_loss")),
        params=summary.get("model/params"),
        metrics=numeric_test_scores(summary.get("metrics") or {}),
        partial_config=config is None,
        predictions=functools.partial(run_files.read_predictions, folder),
        hidden=lambda kind, folder=folder: run_files.read_png(folder / HIDDEN_FILES[kind]),
    )
    layers = summary.get("layers")
    if isinstance(layers, dict) and "first_blind_layer" in layers:
        lost = layers["first_blind_layer"]
        record.layers_measured = True
        record.input_lost_at = lost if isinstance(lost, int) else None
    mark_broken(record, problems)
    return record


def unreadable_folder(error: OSError) -> RunRecord:
    """A folder under PATH that cannot be listed: maybe a run, certainly not one to skip."""
    return RunRecord(
        source=str(Path(error.filename).resolve()),
        config={},
        status=run_folder.BROKEN,
        error=f"the folder cannot be read ({error.strerror or error})",
        partial_config=True,
    )


def join_cell(cell: Path, run: RunRecord | None) -> RunRecord:
    """Join a sweep cell to its run folder, or record the cell itself as broken."""
    params, records, problems = read_cell(cell)
    failed = records[run_folder.CELL_FAILED]
    log = str(cell / run_folder.CELL_LOG) if (cell / run_folder.CELL_LOG).is_file() else None
    if run is not None:
        run.log, run.cell = log, True
        if run.partial_config:
            run.config = {**params, **run.config}
        if problems:
            mark_broken(run, problems)
        elif failed is not None and run.status == run_folder.OK:
            # The runner did not count it as done (e.g. the process died after writing scores).
            run.status = run_folder.BROKEN
            run.error = failed.get("reason", "the sweep cell failed")
        return run
    if problems:
        reason = "; ".join(problems)
    elif failed is not None:
        reason = failed.get("reason", "the sweep cell failed")
    elif records[run_folder.CELL_DONE] is not None:
        reason = f"{run_folder.CELL_DONE} but no {run_folder.CELL_RUN}/{run_folder.METRICS}"
    else:
        reason = "no result yet: still running, or stopped before it finished"
    return RunRecord(
        source=str(cell),
        config=params,
        status=run_folder.BROKEN,
        error=reason,
        log=log,
        partial_config=True,
        cell=True,
    )


def load_local(paths: list[str], skip: Path | None = None) -> list[RunRecord]:
    """Every run folder and every sweep cell under the paths (each found once), and every folder
    there that cannot be read, as a broken run."""
    runs: dict[Path, RunRecord] = {}
    cells: set[Path] = set()
    unreadable: list[OSError] = []
    for path in paths:
        root = Path(path)
        if not root.exists():
            raise ConfigError(f"PATH {path!r} does not exist")
        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append):
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
            if run_folder.METRICS in filenames and folder not in runs:
                runs[folder] = run_folder_record(folder)
            if run_files.is_cell(folder, filenames):
                cells.add(folder)
    for error in unreadable:
        runs.setdefault(Path(error.filename).resolve(), unreadable_folder(error))
    records = dict(runs)
    for cell in sorted(cells):
        run_dir = (cell / run_folder.CELL_RUN).resolve()
        records[run_dir] = join_cell(cell, runs.get(run_dir))
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


def wandb_summary(run) -> dict:
    summary = getattr(run, "summary_metrics", None)
    return dict(summary) if isinstance(summary, dict) else dict(run.summary)


def wandb_config(run) -> dict:
    """A W&B run's config under the dotted command-line names, W&B's own `_` keys left out."""
    config = {}
    for key, value in dict(run.config).items():
        if str(key).startswith("_"):
            continue
        # Older API versions hand back {"value": ..., "desc": ...} per key.
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        config[key] = value
    return run_folder.flatten_config(config)


class WandbRunFiles:
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
        path = self.path(lambda name: name == run_folder.PROBE_PREDICTIONS)
        return None if path is None else run_files.read_predictions(path)

    def hidden(self, kind: str) -> Image.Image | None:
        # ProbePanels logs the panels as images under panels/<stem of the run-folder file>.
        prefix = f"media/images/panels/{Path(HIDDEN_FILES[kind]).stem}"
        path = self.path(lambda name: name.startswith(prefix) and name.endswith(".png"))
        return None if path is None else run_files.read_png(path)


def wandb_record(run, where: str, cache: Path) -> RunRecord:
    """One W&B run as a RunRecord: config from run.config, scores from run.summary, the probe
    predictions and hidden panels from the run's files when needed."""
    summary, config = wandb_summary(run), wandb_config(run)
    state = str(getattr(run, "state", "finished"))
    status = str(summary.get("status") or WANDB_STATES.get(state, state))
    metrics = numeric_test_scores(summary)
    error = summary.get("error")
    if status == run_folder.OK and not metrics:
        status, error = run_folder.BROKEN, f"W&B state {state} but no test scores in the summary"
    elif status != run_folder.OK and not error:
        error = f"W&B state {state}"
    fitted = summary.get("train/fitted")
    files = WandbRunFiles(run, cache / str(run.id))
    return RunRecord(
        source=f"{where}/{run.id} ({run.name})",
        config=config,
        status=status,
        error=error,
        fitted=None if fitted is None else bool(fitted),
        final_loss=json_number(summary.get("train/final_loss")),
        params=summary.get("model/params", config.get("model/params")),
        metrics=metrics,
        predictions=files.predictions,
        hidden=files.hidden,
    )


def load_wandb_sweep(sweep_path: str, api, cache: Path) -> list[RunRecord]:
    """The runs of a W&B sweep as RunRecords (see wandb_record)."""
    entity, project, sweep_id = parse_sweep_path(sweep_path)
    try:
        runs = list(api.sweep(f"{entity}/{project}/{sweep_id}").runs)
    except Exception as error:  # the API's errors vary by version; say which sweep failed
        raise ConfigError(f"--wandb-sweep {sweep_path!r}: cannot read the sweep: {error}") from None
    return [wandb_record(run, f"{entity}/{project}", cache) for run in runs]


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


def shown_path(path: str | None) -> str | None:
    """A path as reports write it: relative to the current folder when it lies inside it, so a
    report committed with the project names no machine's absolute paths."""
    if path is None or path.startswith("wandb:"):
        return path
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else path
    except (OSError, ValueError):
        return path
