"""Train a cell in this process, as `identity-crisis fit` would in a process of its own: what a
worker (identity_crisis.worker_loop) and the in-process W&B agent (identity_crisis.wandb_agent) do
for each cell.

Each cell runs `identity_crisis.cli.main(argv)`, the code path of `identity-crisis fit`, with
fds 1 and 2 on the cell's log (so C-level output lands there too). Around it this process saves
and restores what a cell may change in it: the environment (the CLI sets WANDB_MODE, Lightning
PL_GLOBAL_SEED), the working directory, the signal handlers, the warning filters (with the
once-only registries), sys.stdout/stderr, torch's thread count and global flags; it finishes a W&B
run left open and closes pyplot figures. The seed is set by each cell's config, as in a process of
its own, so a cell's metrics do not depend on what the process trained before.

A cell that fails normally (diverged, a bad value) is clean: the process may take the next one.
A crash (any other error: it may leave debris in the process), a KeyboardInterrupt or a run that
Lightning interrupted is not: the process should end.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path

# The signals whose handlers a cell may change (the CLI sets SIGINT and SIGHUP, Lightning SIGTERM
# and SIGUSR1 while it trains).
CELL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
INTERRUPTED = 130  # 128 + SIGINT: the answer for a cell stopped by a signal


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
        # The fds themselves, not only sys.stdout: torch's C++ warnings, CUDA and a cell's child
        # processes write to fds 1 and 2, and a cell of its own process would have them in its log.
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):  # a cell may have closed its streams
            sys.stdout.flush()
            sys.stderr.flush()
        # Output between cells (a thread of the last one finishing) belongs to no cell's log.
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
