"""Linux only: the kernel's parent-death signal (prctl PR_SET_PDEATHSIG) for a cell that runs as a
process of its own (`identity-crisis sweep --isolate`, or a sweep whose command is not this
project's `fit`). The one use of ctypes in this package.

A runner that is SIGKILLed cannot stop its cells, and such a cell runs a command that is not ours,
so it cannot watch for its runner as a worker does (identity_crisis.worker_loop): only the kernel
can end it. Python has no public call for prctl. Other systems have no such switch: there a
SIGKILLed runner's isolated cells train on to their end (their locks go stale, a rerun redoes
them).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@functools.cache
def _prctl():
    return ctypes.CDLL(None, use_errno=True).prctl


def killed_with(runner_pid: int) -> Callable[[], None] | None:
    """What a child runs between fork and exec so that the kernel SIGKILLs it when the runner
    (`runner_pid`, the process forking it) dies; None where there is no such switch. prctl is
    looked up here, in the runner: the forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = _prctl()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != runner_pid:  # the runner died before the switch was on
            os.kill(os.getpid(), signal.SIGKILL)

    return arm
