"""Run a W&B sweep file without a W&B server: the offline sweep runner.

    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --dry-run        # list the cells
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml                  # every GPU, else every CPU
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --gpus [0,1] --per-gpu 4
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --limit 3 --trainer.max_steps=10  # smoke test

It reads the same YAML `wandb sweep` reads (`identity_crisis.sweep_file`), expands the grid (or
draws `run_cap` seeded random cells), fills the file's own `command` as a W&B agent fills it, and
runs each cell with WANDB_MODE=offline and the sweep's name as the W&B group. Run it from the
project root (the commands name `configs/...` and `identity_crisis/cli.py` relative to it). Extra
`--section.key=value` arguments go to every cell and are part of the cells' identity: a smoke
test gets folders of its own.

Each slot has a worker process (`identity_crisis.worker_loop`) that imports once and trains one
cell after another in-process, each with a fresh Trainer, model, seed, W&B run and folder; a
cell that crashed or was interrupted retires its worker and the next cell gets a fresh one.
`--isolate` runs every cell as a process of its own instead (as does a sweep whose command is
not this project's `fit`); the cells, their folders and records are the same either way.

Before the first cell starts, every cell's command is parsed by the real CLI; a bad one stops
the runner (exit 2) with one line naming the cell, and nothing is started or created.

Each cell gets `<out>/<sweep>/<cell>/`, created when it starts: `log.txt` (each start appends its
command and output), the run folder `run/`, and `done.json` (values, overrides, the full command,
seconds) once it finished with a result, or `failed.json` (exit code, reason, log) otherwise.
While a runner trains a cell it holds `lock.json` (`identity_crisis.locks`), so several runners
(on this machine or on hosts sharing the filesystem) split one sweep: each walks the cells in
order and takes the next that is neither done nor held. The lock of a runner that is gone (its
process, on this host; its heartbeat, for the takeover time, on another) is taken over. A runner
that runs out of cells while other runners hold some does not leave them unwatched: the first such
runner takes `<sweep>/watcher.json`, looks at the held cells again every few seconds and takes
over any whose runner died; the others leave, saying how many cells they left. The runner that
ends the sweep (no cell left held by anyone) names the cells that are not done and exits 1 if
there are any. A rerun skips done cells and redoes the rest (failed, interrupted, never started).

SIGINT, SIGTERM and SIGHUP stop the running cells (SIGINT to each cell's or worker's process
group, SIGKILL after STOP_GRACE_S, identity_crisis.cell_processes), record them as interrupted and
release their locks; the runner then exits with 128 + the signal number (130, 143, 129). A signal
the runner was started ignoring (nohup's SIGHUP) stays ignored. A SIGKILLed runner's workers
notice it is gone and end within a second; on Linux its processes per cell are ended by the
kernel (identity_crisis.parent_death).
Exit codes otherwise: 0 every cell this runner started is done (and, from the runner that ended
the sweep, every cell of it); 1 some failed or were interrupted, or the sweep ended with cells not
done; 2 a bad command line or sweep file (nothing ran).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from identity_crisis import run_folder
from identity_crisis.cell_processes import (
    Worker,
    WorkerCell,
    in_process_argv,
    start_process,
    stop_all,
)
from identity_crisis.locks import LOCK_FILE, FolderLock, takeover_seconds
from identity_crisis.run_folder import (
    CELL_FAILED,
    CELL_LOG,
    CELL_RUN,
)
from identity_crisis.slots import usable_cpus
from identity_crisis.sweep_file import (
    DEFAULT_OUT,
    Sweep,
    SweepError,
    cell_id,
    expand,
    fill_command,
)
from identity_crisis.verdict import clock, in_words, results_from_metrics

# The signals that stop the runner cleanly; its exit code is then 128 + the signal's number.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A cell's values as JSON, in its folder, for a command that names ${args_json_file}.
ARGS_JSON = "args.json"
# The sweep folder's lock of the runner that stays while other runners hold cells, to take over
# any whose runner dies; with it held, the other runners that run out of cells may leave.
WATCH_FILE = "watcher.json"


@dataclass
class Cell:
    index: int
    params: dict
    folder: Path

    @property
    def done(self) -> bool:
        return run_folder.cell_done(self.folder)

    def failed_since(self, since: float) -> bool:
        """Failed (not interrupted) after `since`: another runner of this round tried it."""
        record = run_folder.read_cell_record(self.folder, CELL_FAILED)
        if not record or str(record.get("reason", "")).startswith("interrupted"):
            return False
        try:
            return (self.folder / CELL_FAILED).stat().st_mtime >= since
        except OSError:
            return False


@dataclass
class Job:
    """A started cell: its process (or the worker training it), lock, open log, full command and
    start time."""

    proc: subprocess.Popen | WorkerCell
    cell: Cell
    lock: FolderLock
    log: IO[str]
    command: list[str]
    started: float


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP only set `received` (the runner's loop then stops
    its cells in order) instead of killing the runner. Installed in the main thread only, and
    never for a signal the process was started ignoring (nohup's SIGHUP, a background job's
    SIGINT)."""

    def __init__(self):
        self.received: int | None = None
        self._saved: dict = {}

    def _handle(self, signum, frame) -> None:
        self.received = self.received or signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                previous = signal.getsignal(sig)
                if previous is not signal.SIG_IGN:
                    self._saved[sig] = previous
                    signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._saved.items():
            signal.signal(sig, previous)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""


class OfflineRunner:
    """Runs the cells of one sweep on local slots: `per_gpu` processes on each GPU, or
    `workers` CPU processes of one thread each; each slot's process is a worker that trains its
    cells one after another, or (`isolate`) a process per cell."""

    def __init__(
        self,
        sweep: Sweep,
        out: str | os.PathLike = DEFAULT_OUT,
        gpus: list[str] | None = None,
        per_gpu: int = 1,
        workers: int | None = None,
        limit: int | None = None,
        seed: int = 0,
        extra_args: list[str] | None = None,
        isolate: bool = False,
        takeover_s: float | None = None,
    ):
        self.sweep = sweep
        self.takeover_s = takeover_seconds(takeover_s)
        # How often a runner with a free slot looks again at the cells other runners hold.
        self.recheck_s = min(5.0, self.takeover_s / 4)
        self.isolate = isolate
        self.workers: dict[int, Worker] = {}
        self.root = Path(out) / sweep.name
        self.extra_args = list(extra_args or [])
        self.cells = [
            Cell(i, params, self.root / cell_id(params, self.extra_args))
            for i, params in enumerate(expand(sweep, seed))
        ]
        if gpus:
            self.slots = [{"CUDA_VISIBLE_DEVICES": g} for g in gpus for _ in range(per_gpu)]
        else:
            threads = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            self.slots = [dict(threads) for _ in range(workers or usable_cpus())]
        self.limit = limit
        self.durations: list[float] = []
        self.to_finish = 0
        self.checked = False
        self._check_paths()

    def _check_paths(self) -> None:
        """A command that names a missing file fails every cell; say so once, before starting."""
        command = self.sweep.command
        named = [self.sweep.program] if "${program}" in command else []
        named += [command[i + 1] for i, c in enumerate(command[:-1]) if c in ("--config", "-c")]
        for name in named:
            if name and not Path(name).exists():
                raise SweepError(
                    f"{self.sweep.path}: the command names {name!r}, which does not exist "
                    f"from {Path.cwd()}; run the sweep from the project root"
                )

    def command(self, cell: Cell) -> list[str]:
        filled = fill_command(self.sweep, cell.params, cell.folder / ARGS_JSON)
        # Later arguments win: each cell writes into its own folder, grouped by the sweep.
        command = filled + [
            f"--run.dir={cell.folder / CELL_RUN}",
            f"--run.group={self.sweep.name}",
            f"--run.sweep={self.sweep.name}",
            *self.extra_args,
        ]
        if not cell.done and run_folder.read_status(cell.folder / CELL_RUN) == run_folder.OK:
            # A result the runner never accepted (its process ended badly after writing it, or
            # the runner died first): `fit` keeps a finished run unless told to train it again.
            command.append("--run.replace=true")
        return command

    def plan(self) -> tuple[list[Cell], list[Cell]]:
        done = [c for c in self.cells if c.done]
        todo = [c for c in self.cells if not c.done]
        return todo[: self.limit] if self.limit is not None else todo, done

    def check(self) -> None:
        """Parse every cell that may run as `fit` would, before the first starts: a bad value or
        key in the sweep file or the overrides is one error here, not a failure in every cell.
        Raises SweepError naming the cell; builds nothing and creates no folder."""
        from identity_crisis.cli import check_fit_args, wandb_args

        # Parsing sets the seed, and Lightning says so each time; the cells will say it. The CLI
        # also warns that it was given args beside sys.argv, which is the point here.
        seed_log = logging.getLogger("lightning_fabric.utilities.seed")
        level = seed_log.level
        seed_log.setLevel(logging.WARNING)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter")
                self._check_cells(check_fit_args, wandb_args)
        finally:
            seed_log.setLevel(level)
        self.checked = True

    def _check_cells(self, check_fit_args, wandb_args) -> None:
        for cell in self.cells:
            if cell.done:
                continue
            argv = in_process_argv(self.command(cell), any_python=True)
            if argv is None:  # not this project's `fit`: nothing to check it against
                return
            error = check_fit_args(wandb_args(argv[1:]))
            if error:
                values = " ".join(f"{key}={value}" for key, value in cell.params.items())
                raise SweepError(f"{self.sweep.path}: cell {cell.index} ({values}): {error}")

    def run(self, poll_s: float = 0.2) -> dict[str, int]:
        """Run the cells; returns the counts (done, skipped, failed, interrupted, others: left to
        other runners, left: cells still held by other runners when this runner left them to
        the watcher, undone: cells not done when this runner ended as the last on the sweep,
        signal: the number of the signal that stopped the runner, or 0)."""
        if not self.checked:
            self.check()
        todo, skipped = self.plan()
        print(
            f"sweep {self.sweep.name}: {len(self.cells)} cells, {len(skipped)} done before, "
            f"{len(todo)} to run on {len(self.slots)} slot(s), "
            f"{'a process per cell' if self.isolate else 'a worker process each'} -> {self.root}",
            flush=True,
        )
        counts = {"done": 0, "skipped": len(skipped), "failed": 0, "interrupted": 0}
        counts |= {"others": 0, "left": 0, "undone": 0}
        self.to_finish = len(todo)
        self.since = time.time()
        self.mine: set[int] = set()  # the cells this runner started
        self.seen_others: set[int] = set()  # done, failed or held by another runner
        done_before = {cell.index for cell in skipped}
        running: dict[int, Job] = {}
        walk, walked, rewalk_at = self._walk(done_before, running), False, math.inf
        watch: FolderLock | None = None
        starts, ended = 0, False
        with StopSignals() as stop:
            try:
                while not stop.received:
                    if walked and len(running) < len(self.slots) and time.time() >= rewalk_at:
                        walk, walked = self._walk(done_before, running), False
                    for slot in range(len(self.slots)):
                        if slot in running or walked or not self._room(starts):
                            continue
                        job = self._next(walk, slot)
                        if job is None:
                            walked, rewalk_at = True, time.time() + self.recheck_s
                        else:
                            running[slot], starts = job, starts + 1
                    if not running and not self._room(starts):
                        break  # --limit: the rest is not this runner's to wait for
                    if not running and walked:
                        open_ = self._open(running)
                        if not open_:
                            ended = True
                            break
                        if any(not (cell.folder / LOCK_FILE).exists() for cell in open_):
                            rewalk_at = 0.0  # a cell let go (its runner was stopped): take it
                        elif watch is None:
                            watch = self._watch(len(open_))
                            if watch is None:
                                counts["left"] = len(open_)
                                break
                    time.sleep(poll_s)
                    self._poll(running, counts)
                    if watch is not None and not self._beat(watch):
                        watch = None  # silent too long, another runner watches now
            finally:
                if running:
                    why = f"interrupted ({stop.name or 'the runner stopped on an error'})"
                    self._stop_jobs(list(running.values()), why, counts)
                for worker in self.workers.values():
                    worker.close()
                if watch is not None:
                    watch.release()
        counts["signal"] = stop.received or 0
        counts["others"] = len(self.seen_others - self.mine)
        undone = [cell for cell in self.cells if not cell.done] if ended else []
        counts["undone"] = len(undone)
        self._summary(counts, undone)
        return counts

    def _room(self, starts: int) -> bool:
        return self.limit is None or starts < self.limit

    def _tag(self, cell: Cell) -> str:
        return f"[{cell.index + 1}/{len(self.cells)}]"

    def _walk(self, done_before: set[int], running: dict[int, Job]) -> Iterator[Cell]:
        """The cells in order, less those done before the runner started and those it runs."""
        for cell in self.cells:
            if cell.index not in done_before and all(j.cell is not cell for j in running.values()):
                yield cell

    def _open(self, running: dict[int, Job]) -> list[Cell]:
        """The cells that have not ended: not done, not failed under a runner of this round, not
        run here. Each is held by another runner, or was let go unfinished."""
        ours = {job.cell.index for job in running.values()}
        return [
            cell
            for cell in self.cells
            if cell.index not in ours and not cell.done and not cell.failed_since(self.since)
        ]

    def _watch(self, held: int) -> FolderLock | None:
        """Become the runner that waits for the cells other runners hold, taking over any whose
        runner dies; None when a live runner already does (this one may leave)."""
        watch = FolderLock(self.root, WATCH_FILE, stale_s=self.takeover_s)
        if not watch.acquire():
            return None
        print(
            f"waiting for {held} cell(s) held by other runners, to take over any whose runner "
            f"dies (after {self.takeover_s:.0f} s without a heartbeat from another host)",
            flush=True,
        )
        return watch

    @staticmethod
    def _beat(lock: FolderLock) -> bool:
        try:
            return lock.heartbeat()
        except OSError:  # a filesystem hiccup: try again at the next poll
            return True

    def _next(self, walk: Iterator[Cell], slot: int):
        """Start the next cell of the walk that is not done, not held by another runner and did
        not fail under another runner of this round; None when the walk is over."""
        for cell in walk:
            if cell.done or cell.failed_since(self.since):
                self.seen_others.add(cell.index)
                continue
            lock = FolderLock(cell.folder, stale_s=self.takeover_s)
            if not lock.acquire():
                if cell.index not in self.seen_others:  # said once, not at every look again
                    print(f"{self._tag(cell)} held  {cell.folder.name} (another runner)")
                self.seen_others.add(cell.index)
                continue
            if cell.done:  # finished by its last owner between our look and our lock
                lock.release()
                self.seen_others.add(cell.index)
                continue
            if lock.took_over:
                print(f"{self._tag(cell)} take over {cell.folder.name}: {lock.took_over}")
                # Its fit died with its runner, maybe on another host, where its run lock
                # cannot be judged: the cell lock has judged it.
                (cell.folder / CELL_RUN / run_folder.LOCK).unlink(missing_ok=True)
            try:
                job = self._start(cell, slot, lock)
            except BaseException:
                lock.release()
                raise
            self.mine.add(cell.index)
            return job
        return None

    def _start(self, cell: Cell, slot: int, lock: FolderLock) -> Job:
        command = self.command(cell)
        if "${args_json_file}" in self.sweep.command:  # what W&B's agent writes for the macro
            (cell.folder / ARGS_JSON).write_text(json.dumps(dict(cell.params)))
        env = {**os.environ, **self.slots[slot], "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
        # A W&B service started by whoever launched the runner (a notebook, a test) is advertised
        # in WANDB_SERVICE; a cell attached to it dies with it and hangs on Ctrl-C. Each cell
        # (or worker) starts its own.
        env.pop("WANDB_SERVICE", None)
        log = run_folder.open_cell_log(cell.folder, shlex.join(command))
        print(f"{self._tag(cell)} start {cell.folder.name}", flush=True)
        argv = None if self.isolate else in_process_argv(command)
        try:
            if argv is not None:
                proc = self._in_worker(slot, env, log, argv, cell)
            else:
                proc = start_process(command, log, env)
        except BaseException:
            log.close()
            raise
        lock.set_cell_process(proc.pid)
        return Job(proc, cell, lock, log, command, time.time())

    def _in_worker(self, slot: int, env: dict, log: IO[str], argv: list[str], cell: Cell):
        """Hand the cell to the slot's worker; a fresh worker when there is none, or when the last
        one is gone or was left unclean (a crash, an interrupt)."""
        for _ in range(2):  # a worker that died since its last answer gets one replacement
            worker = self.workers.get(slot)
            if worker is None or not worker.usable:
                if worker is not None:
                    worker.close(grace_s=5.0)
                worker = self.workers[slot] = Worker(env, log)
            # Which cells shared a process, for whoever reads the log after a surprise.
            log.write(f"in worker {worker.proc.pid}, its cell {worker.cells + 1}\n")
            log.flush()
            try:
                return worker.run(argv, log.name, str(cell.folder))
            except BrokenPipeError:
                worker.clean = False
        raise RuntimeError(f"no worker would take {cell.folder}")

    def _poll(self, running: dict[int, Job], counts: dict) -> None:
        """Finish the cells that ended; keep the others' locks alive."""
        for slot, job in list(running.items()):
            if job.proc.poll() is not None:
                del running[slot]
                job.log.close()
                counts["done" if self._finish(job) else "failed"] += 1
                continue
            # Silent past the takeover time: another runner has the cell now.
            if not self._beat(job.lock):
                del running[slot]
                print(f"{self._tag(job.cell)} LOST the lock of {job.cell.folder.name}; stopping")
                stop_all([job.proc])
                job.log.close()
                counts["interrupted"] += 1

    def _finish(self, job: Job) -> bool:
        cell, returncode = job.cell, job.proc.returncode
        try:
            status = run_folder.read_status(cell.folder / CELL_RUN)
            if returncode == 0 and status == run_folder.OK:
                seconds = time.time() - job.started
                run_folder.write_cell_done(
                    cell.folder, cell.params, seconds, job.command, self.extra_args
                )
                self.durations.append(seconds)
                print(
                    f"{self._tag(cell)} done  {cell.folder.name} in {clock(seconds)}: "
                    f"{cell_result(cell.folder / CELL_RUN)}{self._eta()}",
                    flush=True,
                )
                return True
            reason = f"exit code {returncode}, run status {status}"
            self._record_failure(cell, returncode, reason)
            print(
                f"{self._tag(cell)} FAILED {cell.folder.name}: {reason}; "
                f"log: {cell.folder / CELL_LOG}{self._eta()}",
                flush=True,
            )
            return False
        finally:
            self.to_finish -= 1
            job.lock.release()

    def _eta(self) -> str:
        """'; 7 left, about 0:12:30 more' from the mean time of the cells done so far."""
        left = self.to_finish - 1
        if left <= 0 or not self.durations:
            return ""
        waves = math.ceil(left / len(self.slots))
        more = waves * sum(self.durations) / len(self.durations)
        return f"; {left} left, about {clock(more)} more"

    def _stop_jobs(self, jobs: list[Job], why: str, counts: dict) -> None:
        """Stop the running cells together; each is recorded interrupted (or done, if it ended
        on its own before the stop reached it) and its lock released."""
        print(f"\n{why}: stopping {len(jobs)} running cell(s) ...", flush=True)
        finishing = [job.proc for job in jobs if self._has_result(job)]
        stop_all([job.proc for job in jobs], spare=finishing)
        for job in jobs:
            job.log.close()
            if job.proc.returncode == 0:
                counts["done" if self._finish(job) else "failed"] += 1
                continue
            self._record_failure(job.cell, job.proc.returncode, why)
            job.lock.release()
            counts["interrupted"] += 1

    @staticmethod
    def _has_result(job: Job) -> bool:
        """The cell wrote its result in this attempt and is only shutting down (W&B, exit)."""
        run = job.cell.folder / CELL_RUN
        try:
            fresh = (run / run_folder.METRICS).stat().st_mtime >= job.started
        except OSError:
            return False
        return fresh and run_folder.read_status(run) == run_folder.OK

    def _record_failure(self, cell: Cell, returncode: int | None, reason: str) -> None:
        run_folder.write_cell_failed(cell.folder, cell.params, returncode, reason)

    def _summary(self, counts: dict[str, int], undone: list[Cell]) -> None:
        others = f", {counts['others']} left to other runners" if counts["others"] else ""
        print(
            f"sweep {self.sweep.name}: {counts['done']} done, {counts['skipped']} skipped "
            f"(done before), {counts['failed']} failed, {counts['interrupted']} interrupted"
            f"{others}",
            flush=True,
        )
        if counts["left"]:
            watcher, _ = FolderLock(self.root, WATCH_FILE).read()
            by = f"pid {watcher.get('pid')} on {watcher.get('host')}" if watcher else "another"
            print(
                f"leaving: {counts['left']} cell(s) still held by other runners; runner {by} "
                "waits for them and takes over any whose runner dies"
            )
        for cell in self.cells:
            record = run_folder.read_cell_record(cell.folder, CELL_FAILED)
            if record is not None:
                # A stopped cell is no fault of its config: it is redone, not looked into.
                kind = "interrupted" if _interrupted(record) else "failed"
                print(f"  {kind}: {cell.folder.name}  (log: {cell.folder / CELL_LOG})")
        if undone:
            names = ", ".join(f"{self._tag(cell)} {cell.folder.name}" for cell in undone)
            print(f"the sweep ended, {len(undone)} of {len(self.cells)} cells not done: {names}")
        print(f"upload to W&B with: wandb sync {self.root}/*/{CELL_RUN}/wandb/offline-run-*")


def cell_result(run_dir: Path) -> str:
    """'fitted (train MSE 1.2e-08); the identity on 93% of MNIST digits, ...' from a finished
    cell's metrics.json."""
    metrics = run_folder.read_metrics(run_dir) or {}
    fitted, loss = metrics.get("fitted"), metrics.get("train/final_loss")
    mse = f" (train MSE {loss:.1e})" if isinstance(loss, float) else ""
    words = in_words(results_from_metrics(metrics.get("metrics") or {}), fitted=None)
    return f"{'fitted' if fitted else 'NOT fitted'}{mse}; {words}"


def _interrupted(record: dict) -> bool:
    return str(record.get("reason", "")).startswith("interrupted")
