"""A worker: one process imports torch, Lightning and W&B once and trains many sweep cells, each
with a fresh Trainer, model, seed, W&B run and folder (identity_crisis.cell_run).

    python -m identity_crisis.worker_loop RUNNER_PID       # the runner starts it, one per slot

It reads a job per line on stdin and answers a line per cell on its stdout (the protocol is
identity_crisis.cell_processes's, the runner's side). It ends when stdin closes, after a cell that
left the process unclean (a crash, an interrupt), or when its runner is gone: a SIGKILLed runner
cannot stop it, so it watches for that itself. Its process title (ps, top) names the cell it
trains.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time

from setproctitle import setproctitle

from identity_crisis.cell_run import INTERRUPTED, output_to, run_cell

# How often the worker looks whether its runner is still there.
RUNNER_CHECK_S = 1.0


def watch_runner(runner_pid: int) -> None:
    """SIGKILL this worker once `runner_pid` is no longer its parent: the runner is gone (a
    SIGKILL, a crash) and nobody will read the answer or stop the cell. The cell's lock stays, for
    a rerun to take over, as for a SIGKILLed runner's process per cell (parent_death)."""

    def watch() -> None:
        while os.getppid() == runner_pid:
            time.sleep(RUNNER_CHECK_S)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="watch-runner", daemon=True).start()


def serve() -> int:
    """The worker's loop: a job per line on stdin, an answer per line on stdout, until stdin
    closes (0) or a cell leaves the process unclean (its code). Output before the first cell goes
    to stderr (the runner points it at the first cell's log: an import error is read there)."""
    # The answers keep the runner's pipe, fd 1 is pointed at stderr: nothing a library prints
    # can then land among the answers.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    setproctitle("identity-crisis worker (starting)")
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
        setproctitle(f"identity-crisis worker {job.get('title', '')}")
        code, clean = run_cell(job["argv"], job.get("log"))
        answers.write(json.dumps({"code": code, "clean": clean}) + "\n")
        if not clean:
            return code
        setproctitle("identity-crisis worker (idle)")
    return 0


def _start_wandb_service() -> None:
    """Start W&B's service process once, before any cell: every cell's run then uses it."""
    import wandb

    with contextlib.suppress(Exception):  # only an optimisation: wandb.init starts it otherwise
        wandb.setup().ensure_service()


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
    os._exit(code)  # not sys.exit: that runs the teardown above said to skip


def main(argv: list[str]) -> None:
    watch_runner(int(argv[0]) if argv else os.getppid())
    try:
        _exit(serve())
    except KeyboardInterrupt:  # between cells: nothing to record
        _exit(INTERRUPTED)


if __name__ == "__main__":
    main(sys.argv[1:])
