"""The run-folder contract: the files a run folder and a sweep cell hold, the statuses a run can
end in, and how each file is written and read. `fit`, the sweep runner, `report` and `theory`
go through this module; nothing else names these files.

A run folder (`fit`):

    metrics.json            status, fit summary, every test/<set>/<score>   (write_metrics)
    config.yaml             the resolved config, as LightningCLI saves it  (read_config)
    probe_panel.png         the probe inputs over the net's outputs
    hidden_trained.png      per-layer channel-mean maps of the trained net (CNN families)
    hidden_init.png         the same at initialization
    probe_predictions.npz   probe inputs, outputs and per-probe scores     (write_predictions)
    weights.ckpt            the trained weights (unless --run.keep_weights=false)
    run.lock                while a process trains into the folder         (write_lock)

A sweep cell (the offline runner): `log.txt` (the command on its first line, then the run's
output), the run folder `run/`, and `done.json` or `failed.json` once it ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from identity_crisis.jsonio import atomic_path, write_json
from identity_crisis.locks import FolderLock

METRICS = "metrics.json"
CONFIG = "config.yaml"
PROBE_PANEL = "probe_panel.png"
HIDDEN_TRAINED = "hidden_trained.png"
HIDDEN_INIT = "hidden_init.png"
PROBE_PREDICTIONS = "probe_predictions.npz"
# The trained weights (and the training images the scores compare with), at the end of training
# or at an interrupt; `identity-crisis test --ckpt_path` re-probes them.
WEIGHTS = "weights.ckpt"

CELL_DONE = "done.json"
CELL_FAILED = "failed.json"
CELL_LOG = "log.txt"
CELL_RUN = "run"
# A cell's log starts with the command it ran, behind this prompt: how a cell that never ended
# (still running, or killed) is told from any other folder with a log.
CELL_COMMAND_PROMPT = "$ "

# Statuses in metrics.json. ok is the only finished one; debug = scores from a debugging run
# (fast_dev_run, a limit on batches), never taken for a result: a real run takes its folder over,
# and `report` leaves it out unless asked; failed = the run diverged; crashed = an error in the
# code; interrupted = a signal or Ctrl-C stopped it. broken is never written by a run: `report`
# gives it to a folder whose files cannot be read or do not agree.
OK, DEBUG, FAILED, CRASHED, INTERRUPTED, BROKEN = (
    "ok",
    "debug",
    "failed",
    "crashed",
    "interrupted",
    "broken",
)


def flatten_config(config: dict, prefix: str = "") -> dict:
    """{'model': {'class_path': ..., 'init_args': {'depth': 3}}} -> {'model.depth': 3, ...}: the
    names the command line and the sweep files use."""
    flat = {}
    for key, value in config.items():
        if key == "init_args":
            flat.update(flatten_config(value, prefix))
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = plain(value)
    return flat


def plain(value):
    """A config value in YAML's own types. jsonargparse's restricted numbers (PositiveInt, ...)
    subclass int and float, and W&B records any such subclass as a string: a dashboard would
    sort depth "10" before "2" and could not put it on an axis."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


# --- run folder ----------------------------------------------------------------------------------
def write_metrics(run_dir: str | Path, summary: dict) -> Path:
    return write_json(Path(run_dir) / METRICS, summary)


def write_failure(run_dir: str | Path, status: str, reason: str) -> Path:
    """A run that ended without a result: its status and why, and no scores."""
    return write_metrics(run_dir, {"status": status, "error": reason})


def read_metrics(run_dir: str | Path) -> dict:
    """metrics.json as a dict; raises OSError or ValueError when it is missing or unreadable."""
    return json.loads((Path(run_dir) / METRICS).read_text())


def read_status(run_dir: str | Path) -> str | None:
    """The status a run folder records; None when it has no readable metrics.json."""
    try:
        return read_metrics(run_dir).get("status")
    except (OSError, ValueError):
        return None


def read_config(run_dir: str | Path) -> dict | None:
    """The run's config under the dotted command-line names; None when there is no config.yaml."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    return flatten_config(yaml.safe_load(path.read_text()) or {})


def write_predictions(run_dir: str | Path, names, inputs, outputs, scores: dict) -> Path:
    path = Path(run_dir) / PROBE_PREDICTIONS
    with atomic_path(path) as tmp, open(tmp, "wb") as file:  # a file: numpy adds no suffix
        np.savez_compressed(file, names=np.array(names), inputs=inputs, outputs=outputs, **scores)
    return path


def read_predictions(path: str | Path) -> dict | None:
    """A probe_predictions.npz (a run folder or the file itself) as a dict of arrays."""
    path = Path(path)
    if path.is_dir():
        path = path / PROBE_PREDICTIONS
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# --- sweep cell ----------------------------------------------------------------------------------
def is_cell(folder: Path, filenames: list[str]) -> bool:
    """Whether a folder is a sweep cell: it ended (done / failed), or it has the runner's log."""
    if CELL_DONE in filenames or CELL_FAILED in filenames:
        return True
    if CELL_LOG in filenames:
        with open(folder / CELL_LOG, errors="replace") as log:
            return log.readline().startswith(CELL_COMMAND_PROMPT)
    return False


def cell_done(cell: Path) -> bool:
    return (Path(cell) / CELL_DONE).is_file()


def write_cell_done(
    cell: Path, params: dict, seconds: float, command: list[str], overrides: list[str]
) -> Path:
    """done.json: the swept values, the runner's overrides, the full command (argv) and the
    seconds it took: everything that made the cell what it is."""
    (Path(cell) / CELL_FAILED).unlink(missing_ok=True)
    record = {
        "params": params,
        "overrides": overrides,
        "command": command,
        "seconds": round(seconds, 2),
        "run": CELL_RUN,
    }
    return write_json(Path(cell) / CELL_DONE, record)


def write_cell_failed(cell: Path, params: dict, returncode: int | None, reason: str) -> Path:
    record = {
        "params": params,
        "returncode": returncode,
        "reason": reason,
        "log": str(Path(cell) / CELL_LOG),
    }
    return write_json(Path(cell) / CELL_FAILED, record)


def read_cell_record(cell: Path, name: str) -> dict | None:
    """done.json or failed.json as a dict; None when absent, {} when unreadable."""
    path = Path(cell) / name
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def open_cell_log(cell: Path, command: str):
    """The cell's log, opened to append the run's output after its command (`$ ...`); the first
    start's command is the file's first line, and a redone cell keeps its earlier attempts."""
    log = (Path(cell) / CELL_LOG).open("a")
    log.write(f"{CELL_COMMAND_PROMPT}{command}\n")
    log.flush()
    return log


def read_cell_command(cell: Path) -> str | None:
    """The command a cell ran, from the first line of its log."""
    path = Path(cell) / CELL_LOG
    if not path.is_file():
        return None
    with open(path, errors="replace") as log:
        first = log.readline()
    return (
        first.removeprefix(CELL_COMMAND_PROMPT) if first.startswith(CELL_COMMAND_PROMPT) else None
    )


# --- run identity --------------------------------------------------------------------------------
# Keys that cannot change a result: where things go, what is printed, how the data is found
# (the files are md5-checked). Every other key of the resolved config is in the run's hash.
RESULT_NEUTRAL_KEYS = {
    "config",
    "ckpt_path",
    "data.root",
    "data.download",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.enable_checkpointing",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
}
RESULT_NEUTRAL_PREFIXES = ("run.",)
# Keys the run hash keeps (where a run ran and how its test images were batched change float
# rounding, so a rerun on a GPU gets a folder of its own) but that never make two runs different
# experiments: the report pools runs across them.
SAME_EXPERIMENT_KEYS = {
    "weights_only",
    "data.batch_size",  # test batching: the scores are sums over images either way
    "trainer.profiler",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    # Lightning's padding sampler (off since the test sets are sharded by rank): one process
    # scores the same images either way.
    "trainer.use_distributed_sampler",
}
LOCK = "run.lock"


def config_hash(flat_config: dict) -> str:
    """8 hex digits of every key of the resolved config that can change a result: two configs
    that differ in any of them never share a run folder."""
    kept = {
        key: value
        for key, value in flat_config.items()
        if key not in RESULT_NEUTRAL_KEYS and not key.startswith(RESULT_NEUTRAL_PREFIXES)
    }
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


class RunFolderTaken(Exception):
    """The run folder holds a finished result, or another process is training into it."""


def claim(run_dir: Path, replace: bool = False, probe: bool = False) -> str | None:
    """Take `run_dir` for a new run: refuse a folder with a finished result (unless `replace`)
    or one another live process is training into; clear an unfinished earlier run (failed,
    crashed, interrupted, killed) so its files and W&B offline runs are not mixed with the new
    one. Returns what was there before (a status, 'unfinished', or None for a new folder).
    `probe`: the folder is a re-probe's (`test`), and the refusal says so."""
    run_dir = Path(run_dir)
    owner = lock_owner(run_dir)
    if owner is not None:
        started = owner.get("started")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
        raise RunFolderTaken(
            f"{run_dir} is being trained now by pid {owner.get('pid')} on {owner.get('host')} "
            f"(since {since}); wait for it or stop it (if it is gone, delete "
            f"{Path(run_dir) / LOCK})"
        )
    restore_previous(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    status = read_status(run_dir)
    if status == OK and not replace and probe:
        raise RunFolderTaken(
            f"{run_dir} already holds a finished run of this config: a re-probe of this "
            f"checkpoint with these test sets; it is kept. See it with `identity-crisis report "
            f"{run_dir}`, or pass --run.replace=true to probe again in its place"
        )
    if status == OK and not replace:
        raise RunFolderTaken(
            f"{run_dir} already holds a finished run of this config; it is kept. "
            f"See it with `identity-crisis report {run_dir}`, re-probe it with "
            f"`identity-crisis test`, or pass --run.replace=true to train it again in its place"
        )
    if status == OK:
        # Set aside, not deleted, until the new run is complete (drop_previous): a replace
        # that is killed or runs out of disk must not lose both results.
        previous = previous_path(run_dir)
        shutil.rmtree(previous, ignore_errors=True)
        run_dir.rename(previous)
        return status
    shutil.rmtree(run_dir)
    return status or "unfinished"


# A few pages a run holds from its start, given back to write why it failed when the disk
# fills up (a full disk would refuse that record too).
RESERVE = ".space-reserve"
RESERVE_BYTES = 16 * 1024


def reserve_space(run_dir: Path) -> None:
    with contextlib.suppress(OSError):  # a disk too full for it fails at the next write anyway
        (Path(run_dir) / RESERVE).write_bytes(b"\0" * RESERVE_BYTES)


def release_space(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (Path(run_dir) / RESERVE).unlink(missing_ok=True)


def missing_folders(run_dir: Path) -> list[Path]:
    """The run folder and those above it that do not exist yet, deepest first."""
    run_dir = Path(run_dir).absolute()
    return [p for p in (run_dir, *run_dir.parents) if not p.exists()]


def remove_if_empty(folders: list[Path]) -> None:
    """Take back the folders a run made (missing_folders) but never wrote into."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def previous_path(run_dir: Path) -> Path:
    """Where a replaced result waits: a hidden sibling, which `report` does not read."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f".{run_dir.name}.previous")


def restore_previous(run_dir: Path) -> bool:
    """Give a folder whose replace never completed (killed, failed, out of disk) back the
    result it replaced; True when one was restored."""
    run_dir, previous = Path(run_dir), previous_path(run_dir)
    if not previous.is_dir():
        return False
    if read_status(run_dir) == OK:  # the new run completed; only the clean-up was missed
        shutil.rmtree(previous, ignore_errors=True)
        return False
    if run_dir.exists():
        shutil.rmtree(run_dir)
    previous.rename(run_dir)
    return True


def drop_previous(run_dir: Path) -> None:
    """The new result is complete: the one it replaced can go."""
    shutil.rmtree(previous_path(run_dir), ignore_errors=True)


def _run_lock(run_dir: Path) -> FolderLock:
    """The run folder's lock, the sweep cells' FolderLock under another name. It never goes stale
    by silence (a fit writes no heartbeat): on this host it is judged by whether its process
    lives (pid and start time, so a reused pid is not taken for the owner); a fit on another host
    is judged by its sweep cell's lock, whose runner beats."""
    return FolderLock(run_dir, LOCK, stale_s=math.inf)


def lock_owner(run_dir: Path) -> dict | None:
    """Who holds the run folder's lock, if that process may be alive (a lock left by a process
    that died on this host is stale and ignored, as is an unreadable one); None when free."""
    lock = _run_lock(run_dir)
    owner, _ = lock.read()
    if not owner or lock.stale_reason(owner) is not None:
        return None
    return owner


def write_lock(run_dir: Path) -> Path:
    """Mark the run folder as being trained by this process: atomically, so a second process
    that races for the same folder gets FileExistsError; a stale lock is taken over."""
    lock = _run_lock(run_dir)
    if not lock.acquire():
        raise FileExistsError(lock.path)
    return lock.path


def release_lock(run_dir: Path) -> None:
    """Remove the run folder's lock if this process wrote it (the FolderLock object that took it
    is gone, so the owner is known by its pid)."""
    lock = _run_lock(run_dir)
    with contextlib.suppress(OSError):  # an unreadable lock is not ours to remove
        owner, _ = lock.read()
        if owner and owner.get("pid") == os.getpid():
            lock.path.unlink(missing_ok=True)
