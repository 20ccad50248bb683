"""The runner's side of its cells' processes: which cells may train in a worker, starting a worker
or a process per cell, handing a worker its cells and reading its answers, and stopping them.

The offline runner (`identity_crisis.sweep`) starts a worker per slot (`identity_crisis.
worker_loop`), with the slot's environment (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS=1), in a
session of its own. It writes one job per line on the worker's stdin, `{"argv": ["fit", ...],
"log": ".../log.txt", "title": ...}`, and the worker answers on its stdout, never a cell's log,
one line per cell: `{"code": 0 | 1 | 2 | 130, "clean": bool}`, the exit code `identity-crisis fit`
would have had (130: interrupted). An answer that is not clean retires the worker: the runner
starts a fresh one for the next cell. A worker that dies (a segfault, the OOM killer) is seen as
its cell's failure, the same way.

Every process the runner starts has a session of its own: a terminal's Ctrl-C reaches the runner
only, which stops its cells in order (stop_all). A runner that dies without stopping them (a
SIGKILL) is noticed by its workers themselves; a process per cell is ended by the kernel, on
Linux (identity_crisis.parent_death).

Nothing here imports the runner, torch or W&B.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from identity_crisis.parent_death import killed_with

# Seconds a cell gets to shut down after its SIGINT (Lightning records it interrupted), before
# SIGKILL. SLURM's default KillWait (30 s between SIGTERM and SIGKILL) leaves room for it.
STOP_GRACE_S = 10.0
# An extra argument for every cell: --section.key=value, or a top-level key of `fit`.
OVERRIDE = re.compile(r"--(seed_everything|[A-Za-z_][\w-]*(\.[\w-]+)+)=")
WORKER_MODULE = "identity_crisis.worker_loop"


def default_sigint() -> None:
    """In a cell, before exec: SIGINT back to its default. A launcher that ignores it (a
    background job, a process whose Lightning run was interrupted) passes that on, and the cell
    would ignore the SIGINT the runner sends it to stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_process(command: list[str], log: IO[str], env: dict) -> subprocess.Popen:
    """A cell as a process of its own, its output in `log`: in a session of its own (see the
    module's text), SIGINT at its default, and killed by the kernel with the runner on Linux."""
    die = killed_with(os.getpid())

    def preexec() -> None:
        default_sigint()
        if die is not None:
            die()

    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=preexec,
    )


def stop_all(procs: list, grace_s: float = STOP_GRACE_S, spare: list | None = None) -> None:
    """SIGINT to each child's whole process group (Lightning then shuts down cleanly and the
    run records itself as interrupted), SIGKILL to those still there after `grace_s`. The `spare`
    ones have written their result and are only exiting: no SIGINT, the same grace to end."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        alive = [proc for proc in procs if proc.poll() is None]
        for proc in alive:
            if sig == signal.SIGINT and proc in (spare or []):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.time() + wait
        for proc in alive:
            try:
                proc.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                continue


def in_process_argv(command: list[str], any_python: bool = False) -> list[str] | None:
    """`["fit", ...]` when `command` runs this project's `fit` with this Python (so a worker may
    run it in-process, with the same code), None for any other command: that cell gets a process
    of its own. Accepted: [env] python (identity_crisis/cli.py | -m identity_crisis.cli) fit ...,
    or [env] identity-crisis fit ... With `any_python`, another interpreter or another
    environment's `identity-crisis` counts too: the runner checks such a cell's arguments before
    anything trains, but runs it in a process of its own."""
    words = list(command)
    if words and words[0] in ("/usr/bin/env", "env"):
        words.pop(0)
    if not words:
        return None
    if any_python:
        is_script = os.path.basename(words[0]) == "identity-crisis"
        is_python = os.path.basename(words[0]).startswith("python")
    else:
        script = os.path.join(os.path.dirname(sys.executable), "identity-crisis")
        is_script = _same_file(words[0], script, resolve=False)
        is_python = _same_file(words[0], sys.executable, resolve=False)
    if is_script:
        words = words[1:]
    elif is_python and len(words) >= 2:
        if words[1] == "-m" and words[2:3] == ["identity_crisis.cli"]:
            words = words[3:]
        elif _same_file(words[1], str(Path(__file__).with_name("cli.py")), resolve=True):
            words = words[2:]
        else:
            return None
    else:
        return None
    return words if words[:1] == ["fit"] else None


def _same_file(word: str, path: str, resolve: bool) -> bool:
    """Whether a command's word names `path`. An interpreter is compared without resolving
    symlinks: another virtual environment's python links to the same binary."""
    found = shutil.which(word) or word
    if resolve:
        return Path(found).resolve() == Path(path).resolve()
    return os.path.abspath(found) == os.path.abspath(path)


class Worker:
    """A worker process of one runner slot, as the runner sees it."""

    def __init__(self, env: dict, first_log):
        # The runner's pid, for the worker to notice when its runner is gone. No preexec
        # function: the worker sets its own SIGINT handler first thing.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=first_log,
            env=env,
            start_new_session=True,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buffer = b""
        self.clean = True  # every cell so far answered clean: it may take the next
        self.cells = 0

    @property
    def usable(self) -> bool:
        return self.clean and self.proc.poll() is None

    def run(self, argv: list[str], log: str | os.PathLike, title: str) -> WorkerCell:
        """Hand the worker a cell; BrokenPipeError if it is gone."""
        job = {"argv": list(argv), "log": str(log), "title": title}
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        self.cells += 1
        return WorkerCell(self)

    def answer(self, timeout: float = 0.0) -> dict | None:
        """The next answer, if one arrives within `timeout` seconds; None otherwise (or at EOF)."""
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                return None
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                return None
            if not chunk:  # EOF: the worker is gone
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self, grace_s: float = 10.0) -> None:
        """End the worker: EOF on its stdin, then SIGKILL to its process group after `grace_s`."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()


class WorkerCell:
    """A cell a worker trains, with the part of subprocess.Popen's interface the runner uses
    (pid, for the process group; poll, wait, returncode)."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.pid = worker.proc.pid
        self.args = worker.proc.args
        self.returncode: int | None = None

    def poll(self, timeout: float = 0.0) -> int | None:
        if self.returncode is not None:
            return self.returncode
        answer = self.worker.answer(timeout)
        if answer is not None:
            self.returncode = int(answer["code"])
            self.worker.clean = bool(answer.get("clean"))
        elif self.worker.proc.poll() is not None:
            answer = self.worker.answer()  # written just before it exited
            died = self.worker.proc.returncode or 1
            self.returncode = int(answer["code"]) if answer else died
            self.worker.clean = False
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            if self.poll(left) is not None:
                return self.returncode
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
