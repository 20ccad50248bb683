"""Workers: one process imports torch, Lightning and W&B once and trains many sweep cells, each
with a fresh Trainer, model, seed, W&B run and folder.

    identity-crisis sweep sweeps/fig2_fcn.yaml             # the runner starts one worker per slot
    python -m identity_crisis.cell_worker                  # a worker (the runner starts it)
    identity-crisis agent ENTITY/PROJECT/ID sweeps/fig2_fcn.yaml [--count N] [--key=value ...]

The offline runner (`identity_crisis.sweep`) starts a worker per slot, with the slot's environment
(CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS=1), in a session of its own, killed by the kernel when the
runner dies (PR_SET_PDEATHSIG), as it started a process per cell before. It writes one job per
line on the worker's stdin, `{"argv": ["fit", ...], "log": ".../log.txt", "title": ...}`, and
the worker answers on its stdout, never a cell's log, one line per cell: `{"code": 0 | 1 | 2 |
130, "clean": bool}`, the exit code `identity-crisis fit` would have had (130: interrupted).

Each cell runs `identity_crisis.cli.main(argv)`, the code path of `identity-crisis fit`, with
fds 1 and 2 on the cell's log (so C-level output lands there too). Around it the worker saves and
restores what a cell may change in the process: the environment (the CLI sets WANDB_MODE, Lightning
PL_GLOBAL_SEED), the working directory, the signal handlers, the warning filters (with the
once-only registries), sys.stdout/stderr, torch's thread count and global flags; it finishes a W&B
run left open and closes pyplot figures. The seed is set by each cell's config, as in a process of
its own, so a cell's metrics do not depend on what the worker trained before.

A cell that fails normally (diverged, a bad value) answers clean and the worker takes the next
one. A crash (any other error: it may leave debris in the process), a KeyboardInterrupt or a run
that Lightning interrupted answers `clean: false` and the worker exits: the runner starts a fresh
one for the next cell. A worker that dies (a segfault, the OOM killer) is seen as the cell's
failure, the same way.

`identity-crisis agent` is the in-process path for W&B sweeps: `wandb.agent` calls a function per
run, in this process, that trains the run's values through the same `fit` code (see `main`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Seconds a cell gets to shut down after its SIGINT (Lightning records it interrupted), before
# SIGKILL. SLURM's default KillWait (30 s between SIGTERM and SIGKILL) leaves room for it.
STOP_GRACE_S = 10.0
# The signals whose handlers a cell may change (the CLI sets SIGINT and SIGHUP, Lightning SIGTERM
# and SIGUSR1 while it trains).
CELL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
INTERRUPTED = 130  # 128 + SIGINT: the answer for a cell stopped by a signal
# The worker's command line is rewritten to name its cell (what `ps` and the tests see); the
# kernel shows only the bytes of the original arguments, so the worker starts with this much room.
TITLE_ROOM = 1024
WORKER_MODULE = "identity_crisis.cell_worker"


# --- processes the runner starts ------------------------------------------------------------------
def default_sigint() -> None:
    """In a cell, before exec: SIGINT back to its default. A launcher that ignores it (a
    background job, a process whose Lightning run was interrupted) passes that on, and the cell
    would ignore the SIGINT the runner sends it to stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_PRCTL = None


def cell_preexec(runner_pid: int):
    """What a cell or worker runs between fork and exec: default_sigint, and on Linux
    PR_SET_PDEATHSIG so the kernel SIGKILLs it when the runner dies, even of a SIGKILL (which the
    runner cannot catch to stop its cells). prctl is looked up here, in the runner, not in the
    forked child. Other systems have no such switch: there a SIGKILLed runner's cells train on to
    their end (their locks go stale, and a rerun redoes them)."""
    global _PRCTL
    if _PRCTL is None and sys.platform.startswith("linux"):
        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        default_sigint()
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL))
            if os.getppid() != runner_pid:  # the runner died before the switch was on
                os.kill(os.getpid(), signal.SIGKILL)

    return preexec


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


# --- the worker's side ----------------------------------------------------------------------------
def set_title(title: str) -> None:
    """Show `title` as this process's command line (/proc/<pid>/cmdline, ps), within the bytes
    of the original arguments. Linux only; elsewhere, or where /proc does not say, a no-op."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49
    except (OSError, ValueError, IndexError):
        return
    if not 0 < start < end:
        return
    # The last byte stays a NUL: the kernel then reads the arguments' bytes and nothing further.
    data = title.encode(errors="replace")[: end - start - 1]
    ctypes.memmove(start, data.ljust(end - start, b"\0"), end - start)


class ProcessState:
    """What one cell may change in the process, saved before it and put back after it."""

    def __init__(self):
        import torch

        self.environ = dict(os.environ)
        self.cwd = os.getcwd()
        self.streams = (sys.stdout, sys.stderr)
        self.main_thread = threading.current_thread() is threading.main_thread()
        self.handlers = {sig: signal.getsignal(sig) for sig in CELL_SIGNALS}
        self.torch = {
            "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "dtype": torch.get_default_dtype(),
            "matmul": torch.get_float32_matmul_precision(),
            "grad": torch.is_grad_enabled(),
        }

    def interrupted(self) -> bool:
        """Lightning caught a KeyboardInterrupt: it then ignores SIGINT and exits with 1."""
        now = signal.getsignal(signal.SIGINT)
        return now is signal.SIG_IGN and self.handlers[signal.SIGINT] is not signal.SIG_IGN

    def restore(self) -> None:
        import torch

        for key in set(os.environ) - set(self.environ):
            del os.environ[key]
        for key, value in self.environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        os.chdir(self.cwd)
        sys.stdout, sys.stderr = self.streams
        if self.main_thread:  # only the main thread may set handlers
            for sig, handler in self.handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
        saved = self.torch
        torch.set_num_threads(saved["threads"])
        torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
        torch.backends.cudnn.benchmark = saved["benchmark"]
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.set_default_dtype(saved["dtype"])
        torch.set_float32_matmul_precision(saved["matmul"])
        torch.set_grad_enabled(saved["grad"])
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()


@contextlib.contextmanager
def output_to(log: str | None):
    """fds 1 and 2 (and so sys.stdout, sys.stderr and every C library and child process) on the
    end of `log` while a cell runs, then on /dev/null until the next; None leaves them alone."""
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):  # a cell may have closed its streams
            sys.stdout.flush()
            sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        os.close(fd)


def run_cell(argv: list[str], log: str | None = None) -> tuple[int, bool]:
    """Train one cell in this process as `identity-crisis fit` would: (exit code, clean). Not
    clean: a crash outside a normal failed run, or an interrupt; this process should then end."""
    from identity_crisis import cli

    state = ProcessState()
    clean = True
    try:
        with output_to(log), warnings.catch_warnings():
            try:
                cli.main(list(argv))
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            except KeyboardInterrupt:
                print("identity-crisis: run interrupted", file=sys.stderr, flush=True)
                code, clean = INTERRUPTED, False
            except BaseException:  # noqa: BLE001 - anything else is this cell's crash
                traceback.print_exc()
                code, clean = 1, False
            if state.interrupted():
                code, clean = INTERRUPTED, False
            _finish_open_run(code)
    finally:
        state.restore()
        _release_run_lock(argv)
    return code, clean


def _release_run_lock(argv: list[str]) -> None:
    """A cell stopped after taking its run folder and before training leaves its run.lock; with
    this process alive, the lock would hold the folder against the cell's next attempt."""
    from identity_crisis import run_folder

    for arg in argv:
        if arg.startswith("--run.dir="):
            run_folder.release_lock(Path(arg.split("=", 1)[1]))


def _finish_open_run(code: int) -> None:
    """A cell that stopped between starting its W&B run and closing it (a refused folder, a
    crash) leaves the run open; a process of its own would have closed it by exiting."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        with contextlib.suppress(Exception):
            wandb.finish(exit_code=1 if code else 0)


def serve() -> int:
    """The worker's loop: a job per line on stdin, an answer per line on stdout, until stdin
    closes (0) or a cell leaves the process unclean (its code). Output before the first cell goes
    to stderr (the runner points it at the first cell's log: an import error is read there)."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    set_title("identity-crisis worker (starting)")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from identity_crisis import cli  # noqa: F401 - the imports every cell would pay
    from identity_crisis.quiet import silence_third_party
    from identity_crisis.tracking import load_env_file

    # W&B reads some settings only at its global set-up, and its service process keeps the fds
    # it started with: both as the CLI prepares them, with the output nowhere.
    silence_third_party()
    load_env_file()
    with output_to(os.devnull):
        _start_wandb_service()
    # The imports' objects live as long as the worker: out of the collector's sight, the full
    # collection after each cell (ProcessState.restore) only walks what that cell left.
    gc.freeze()
    for line in sys.stdin:
        job = json.loads(line)
        set_title(f"identity-crisis worker {job.get('title', '')}")
        code, clean = run_cell(job["argv"], job.get("log"))
        answers.write(json.dumps({"code": code, "clean": clean}) + "\n")
        if not clean:
            return code
        set_title("identity-crisis worker (idle)")
    return 0


def _start_wandb_service() -> None:
    """Start W&B's service process once, before any cell: every cell's run then uses it."""
    import wandb

    with contextlib.suppress(Exception):  # only an optimisation: wandb.init starts it otherwise
        wandb.setup().ensure_service()


# --- the runner's side ----------------------------------------------------------------------------
class Worker:
    """A worker process of one runner slot, as the runner sees it."""

    def __init__(self, env: dict, first_log, runner_pid: int | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, " " * TITLE_ROOM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=first_log,
            env=env,
            start_new_session=True,
            preexec_fn=cell_preexec(runner_pid or os.getpid()),
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


# --- W&B sweeps, in-process -----------------------------------------------------------------------
SWEEP_PARAM_PATH = "WANDB_SWEEP_PARAM_PATH"  # where `wandb.agent` writes a run's values


def agent_params(path: str | os.PathLike) -> dict:
    """A run's values from the file `wandb.agent` writes for it: `key: {value: v}` per key."""
    import yaml

    config = yaml.safe_load(Path(path).read_text()) or {}
    return {
        key: entry["value"]
        for key, entry in config.items()
        if key != "wandb_version" and isinstance(entry, dict) and "value" in entry
    }


def agent_argv(sweep, params: dict, extra_args: list[str]) -> list[str]:
    """`["fit", ...]` for a run's values: the sweep file's command filled as `wandb agent` and the
    offline runner fill it, then the extra `--key=value` arguments. ValueError for a command that
    is not this project's `fit`."""
    from identity_crisis.cli import wandb_args
    from identity_crisis.sweep_file import fill_command

    argv = in_process_argv(fill_command(sweep, params))
    if argv is None:
        raise ValueError(
            f"{sweep.path}: its command does not run this project's `fit` with this Python; "
            "use `wandb agent` (the command path)"
        )
    return wandb_args([*argv, *extra_args])


class CellCrashed(RuntimeError):
    """A cell ended in a way that may leave this process unclean: the agent stops."""


def agent_cell(sweep, extra_args: list[str]) -> None:
    """What `wandb.agent` calls for each run: its values, from the file the agent wrote, trained
    by `fit` in this process. The CLI's W&B logger starts the run the agent set up (its id and
    sweep are in the environment), named and filed as a `wandb agent` command's run is. A
    failed run (diverged, a bad value) is recorded failed and the agent goes on; a crash or an
    interrupt raises CellCrashed, which stops the agent (max_consecutive_failed_runs=1)."""
    argv = agent_argv(sweep, agent_params(os.environ[SWEEP_PARAM_PATH]), extra_args)
    code, clean = run_cell(argv)
    if not clean:
        raise CellCrashed(f"the run ended with exit code {code}; this process stops")


def parse_agent_args(argv: list[str]) -> argparse.Namespace:
    from identity_crisis.sweep import OVERRIDE

    parser = argparse.ArgumentParser(
        prog="identity-crisis agent",
        description="A W&B sweep agent that trains each run in this process (imports paid once). "
        "Extra --section.key=value arguments go to every run.",
        allow_abbrev=False,
    )
    parser.add_argument("sweep_id", help="entity/project/id, as `wandb sweep` prints it")
    parser.add_argument("sweep_file", help="the sweep YAML given to `wandb sweep`")
    parser.add_argument("--count", type=int, default=None, help="runs to train, then stop")
    args, extra = parser.parse_known_args(argv)
    if args.count is not None and args.count < 1:
        parser.error(f"--count={args.count} is not valid; it must be >= 1")
    wrong = next((arg for arg in extra if not OVERRIDE.match(arg)), None)
    if wrong is not None:
        parser.error(f"unrecognized argument {wrong!r}: give --section.key=value overrides")
    args.extra = extra
    return args


def main(argv: list[str] | None = None) -> None:
    """`identity-crisis agent SWEEP_ID SWEEP_FILE [--count N] [--key=value ...]`: `wandb.agent`
    with a function. Needs the W&B server and a key, as `wandb agent` does; run it from the
    project root. Exit codes: 0 the agent stopped (count reached, sweep over, Ctrl-C); 1 a run
    crashed and stopped it; 2 a bad command line or sweep file."""
    from identity_crisis.errors import ConfigError
    from identity_crisis.sweep_file import load_sweep

    args = parse_agent_args(sys.argv[1:] if argv is None else argv)
    try:
        sweep = load_sweep(args.sweep_file)
        agent_argv(sweep, {key: None for key in sweep.parameters}, args.extra)
    except (ConfigError, ValueError) as error:
        print(f"identity-crisis agent: error: {error}", file=sys.stderr)
        sys.exit(2)
    import wandb

    crashed = []

    def function() -> None:
        try:
            agent_cell(sweep, args.extra)
        except CellCrashed:
            crashed.append(True)
            raise

    wandb.agent(args.sweep_id, function=function, count=args.count, max_consecutive_failed_runs=1)
    sys.exit(1 if crashed else 0)


def _exit(code: int) -> None:
    """End the worker at once. Every cell's files and W&B run are closed by now; the
    interpreter's own teardown of torch and Lightning would take seconds (8 s on a busy 2-core
    machine) that a runner waits for between its last cell and its exit."""
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        with contextlib.suppress(Exception):
            wandb.teardown()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        _exit(serve())
    except KeyboardInterrupt:  # between cells: nothing to record
        _exit(INTERRUPTED)
