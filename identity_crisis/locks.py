"""One folder, one owner: the lock that lets several sweep runners share a sweep.

A runner takes `<cell>/lock.json` before it starts a cell and removes it once the cell ended (done
or failed). The file says who holds it:

    {"token": ..., "pid": 4242, "host": "node17", "pidns": "pid:[4026531836]",
     "pid_start": "123456", "started": 1767225600.0, "heartbeat": 1767225610.0,
     "takeover_s": 120.0, "cell_pid": 4250, "cell_pid_start": "123460"}

(`cell_pid`: the process that trains the cell, a worker or the cell's own, once it started.)

and the owner rewrites `heartbeat` every HEARTBEAT_S seconds (more often under a takeover time
below 4 x HEARTBEAT_S). Another runner skips a held cell, and takes the lock over only when its
owner is gone:

- on the same host (same hostname and PID namespace), the owner's process no longer exists (or
  is a zombie, or its PID now belongs to a process started at another time), and neither does
  the cell's process: a worker outlives a SIGKILLed runner by up to a second (it watches for
  it), and a taker that started then would train the cell beside it; or
- on any host, its heartbeat is older than the takeover time: the larger of the taker's and the
  one the owner wrote, so a runner given a short one never judges an owner that beats slower.
  STALE_S by default, or $IDC_SWEEP_TAKEOVER_S, or the runner's --takeover-s. Hosts sharing a
  filesystem must keep their clocks within a few seconds of each other (NTP), far below it.

Every step is atomic on a local or a network filesystem:

- taking a free lock: the record is written to a private file, then hard-linked to lock.json
  (link fails when lock.json exists, and readers never see half a record); filesystems without
  hard links fall back to O_CREAT | O_EXCL;
- taking over a stale lock: the taker first creates a marker named after the stale record's
  hash with O_CREAT | O_EXCL (one taker per stale record wins), re-reads lock.json, and only if
  it is still the record it judged stale renames its own record over it;
- the heartbeat: the owner re-reads lock.json and, if it is still its own, renames a fresh
  record over it. An owner that finds someone else's record there has lost the lock (it was
  silent for the takeover time) and must stop its cell.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sys
import time
import uuid
from pathlib import Path

LOCK_FILE = "lock.json"
# The owner refreshes its heartbeat this often (the sweep runner does it from its poll loop).
HEARTBEAT_S = 10.0
# A lock whose heartbeat is older than this is abandoned (its runner was killed, its node died)
# and may be taken over. Twelve missed heartbeats: a busy machine never looks dead.
STALE_S = 120.0
# Where a runner's takeover time comes from when its command line does not give one.
TAKEOVER_ENV = "IDC_SWEEP_TAKEOVER_S"


def takeover_seconds(value: float | str | None = None) -> float:
    """The takeover time: `value` (a flag's), else $IDC_SWEEP_TAKEOVER_S, else STALE_S. Raises
    ValueError naming where a value that is not a positive number came from."""
    source = "--takeover-s"
    if value is None:
        value, source = os.environ.get(TAKEOVER_ENV) or None, f"${TAKEOVER_ENV}"
    if value is None:
        return STALE_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"{source}={value!r} is not valid: give a positive number of seconds")
    return seconds


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc/<pid>/stat; None if no process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 (state) onwards
    return fields[0], fields[19]  # state is field 3, starttime field 22


def _process_start(pid: int) -> str | None:
    """A process's start time (Linux: from /proc), with its pid the process's identity; None
    elsewhere or when it is gone."""
    stat = _proc_stat(pid) if sys.platform.startswith("linux") else None
    return stat[1] if stat else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_alive(pid: int, pid_start: str | None = None) -> bool:
    """Whether a process of this host is still running: not gone, not a zombie, and (when its
    start time is known) not a newer process that reuses the PID."""
    if sys.platform.startswith("linux"):
        stat = _proc_stat(pid)
        if stat is None:
            return False
        state, started = stat
        return state not in ("Z", "X") and (pid_start is None or started == pid_start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class FolderLock:
    """The lock file of one folder (a sweep cell). acquire() -> True when this object holds it;
    heartbeat() while holding it; release() when done."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_FILE, stale_s: float = STALE_S):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.stale_s = stale_s
        self.token = uuid.uuid4().hex
        self.held = False
        self.started = time.time()
        self.beat = 0.0  # time of the last heartbeat written
        self.took_over: str | None = None  # why the previous owner was judged gone, if any
        self.cell_process: tuple[int, str | None] | None = None  # (pid, start time)

    def record(self) -> dict:
        return {
            "token": self.token,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "pidns": _pid_namespace(),
            "pid_start": _process_start(os.getpid()),
            "started": self.started,
            "heartbeat": time.time(),
            # What the owner promised to beat within, for a taker with a shorter takeover time.
            "takeover_s": self.stale_s if math.isfinite(self.stale_s) else None,
            "cell_pid": self.cell_process[0] if self.cell_process else None,
            "cell_pid_start": self.cell_process[1] if self.cell_process else None,
        }

    def _private_copy(self) -> Path:
        """A fresh record in a file of its own, to be linked or renamed to the lock."""
        tmp = self.path.with_name(f".{self.path.name}.{self.token}.tmp")
        self.beat = time.time()
        try:
            tmp.write_text(json.dumps(self.record()) + "\n")
        except BaseException as error:  # a full disk leaves the file created but empty
            tmp.unlink(missing_ok=True)
            if isinstance(error, OSError) and error.filename is None:
                error.filename = str(self.path)  # a write error names no file; the user's is this
            raise
        return tmp

    def read(self) -> tuple[dict | None, bytes | None]:
        """(the lock's record, its raw bytes): (None, None) when there is no lock, ({}, raw)
        when it cannot be read as a record."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        try:
            record = json.loads(raw)
        except ValueError:
            return {}, raw
        return (record if isinstance(record, dict) else {}), raw

    def acquire(self) -> bool:
        """Take the lock if it is free or its owner is gone; False when someone holds it."""
        made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            return self._acquire()
        except OSError:  # a full disk: no empty folders left for the next runner to puzzle over
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise

    def _acquire(self) -> bool:
        for _ in range(3):  # the lock may vanish between a failed create and the read
            if self._create():
                self.held = True
                return True
            owner, raw = self.read()
            if owner is None:
                continue
            why = self.stale_reason(owner)
            if why is None:
                return False
            if self._take_over(raw):
                self.held, self.took_over = True, why
                return True
            return False
        return False

    def _create(self) -> bool:
        tmp = self._private_copy()
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here: exclusive create, then write
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as lock:
                lock.write(tmp.read_bytes())
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def stale_reason(self, owner: dict) -> str | None:
        """Why the lock's owner is gone (so the lock may be taken over), or None if it may live."""
        now = time.time()
        if not owner:  # unreadable: judge by the file's age
            try:
                age = now - self.path.stat().st_mtime
            except FileNotFoundError:
                return "the lock vanished"
            return f"unreadable lock, {age:.0f} s old" if age > self.stale_s else None
        pid, host = owner.get("pid"), owner.get("host")
        same_host = host == socket.gethostname() and owner.get("pidns") == _pid_namespace()
        if same_host and isinstance(pid, int) and not process_alive(pid, owner.get("pid_start")):
            cell_pid = owner.get("cell_pid")
            if not isinstance(cell_pid, int) or not process_alive(
                cell_pid, owner.get("cell_pid_start")
            ):
                return f"its runner (pid {pid} on {host}) is gone"
            return None  # its cell still trains, for a moment: taken over once that ended too
        beat, promised = owner.get("heartbeat"), owner.get("takeover_s")
        silent = now - beat if isinstance(beat, int | float) else float("inf")
        stale_s = max(self.stale_s, promised if isinstance(promised, int | float) else 0.0)
        if silent > stale_s:
            return f"no heartbeat from pid {pid} on {host} for {silent:.0f} s"
        return None

    def _take_over(self, stale: bytes) -> bool:
        """Replace the stale record `stale` by ours, unless another taker or its owner was first."""
        digest = hashlib.sha1(stale).hexdigest()[:16]
        marker = self.path.with_name(f".{self.path.name}.takeover-{digest}")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        try:
            if self.read()[1] != stale:
                return False
            os.replace(self._private_copy(), self.path)
            return True
        finally:
            marker.unlink(missing_ok=True)

    def set_cell_process(self, pid: int) -> None:
        """Name the process that trains the cell in the record (written at once): a taker waits
        for it as well as for the runner."""
        self.cell_process = (pid, _process_start(pid))
        self.heartbeat(every_s=0.0)  # the record rewritten now, if the lock is still ours

    def owns(self) -> bool:
        owner, _ = self.read()
        return bool(owner) and owner.get("token") == self.token

    def heartbeat(self, every_s: float | None = None) -> bool:
        """Refresh the heartbeat if `every_s` has passed since the last (by default HEARTBEAT_S,
        or a quarter of the takeover time when that is shorter); False when the lock is no longer
        ours (taken over after a silence longer than the takeover time)."""
        if not self.held:
            return False
        if every_s is None:
            every_s = min(HEARTBEAT_S, self.stale_s / 4)
        if time.time() - self.beat < every_s:
            return True
        if not self.owns():
            self.held = False
            return False
        os.replace(self._private_copy(), self.path)
        return True

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.held and self.owns():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __repr__(self) -> str:
        return f"FolderLock({str(self.folder)!r}, held={self.held})"
