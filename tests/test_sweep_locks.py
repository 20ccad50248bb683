"""The cell lock (taken once, taken over only from a runner that is gone), and what the runner
refuses before anything starts: a mistyped flag, a cell the CLI would reject. No training here."""

import json
import multiprocessing
import os
import socket
import subprocess
import threading
import time

import pytest

from identity_crisis.locks import LOCK_FILE, STALE_S, TAKEOVER_ENV, FolderLock
from identity_crisis.run_folder import CELL_DONE, write_cell_done, write_cell_failed
from identity_crisis.sweep import WATCH_FILE, OfflineRunner
from identity_crisis.sweep_command import main, parse_args
from identity_crisis.sweep_file import load_sweep
from tests.test_sweeps import write_sweep


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def plant(folder, **changes) -> dict:
    """A lock.json as a runner writes it, with some fields changed."""
    folder.mkdir(parents=True, exist_ok=True)
    record = FolderLock(folder).record() | changes
    (folder / LOCK_FILE).write_text(json.dumps(record))
    return record


def test_a_free_lock_is_taken_once_held_with_a_heartbeat_and_released(tmp_path):
    first, second = FolderLock(tmp_path / "cell"), FolderLock(tmp_path / "cell")
    assert first.acquire() and not second.acquire()
    owner = json.loads((tmp_path / "cell" / LOCK_FILE).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert {"started", "heartbeat", "token"} <= set(owner)
    time.sleep(0.01)
    assert first.heartbeat(every_s=0)
    beat = json.loads((tmp_path / "cell" / LOCK_FILE).read_text())["heartbeat"]
    assert beat > owner["heartbeat"]
    first.release()
    assert not (tmp_path / "cell" / LOCK_FILE).exists()
    assert second.acquire() and second.took_over is None
    assert sorted(p.name for p in (tmp_path / "cell").iterdir()) == [LOCK_FILE]  # no litter


@pytest.mark.parametrize(
    "changes, taken",
    [
        ({"pid": "dead"}, True),  # this host, the runner's process is gone
        ({"pid_start": "1"}, True),  # this host, the PID now belongs to a newer process
        # the runner is gone, its cell's process (a worker) not yet: it could still write there
        ({"pid": "dead", "cell_pid": "alive"}, False),
        ({"pid": "dead", "cell_pid": "dead"}, True),
        ({"pid": "dead", "cell_pid": "alive", "cell_pid_start": "1"}, True),  # PID reused
        ({}, False),  # this host, alive (this very process)
        ({"host": "elsewhere"}, False),  # another host, heartbeat fresh
        ({"host": "elsewhere", "heartbeat": time.time() - STALE_S - 5}, True),  # silent
        ({"heartbeat": time.time() - STALE_S - 5}, True),  # alive here but hung
    ],
)
def test_a_lock_is_taken_over_only_when_its_owner_is_gone(tmp_path, changes, taken):
    pids = {"dead": dead_pid(), "alive": os.getpid()}
    changes = {k: pids.get(v, v) if k in ("pid", "cell_pid") else v for k, v in changes.items()}
    planted = plant(tmp_path / "cell", **changes)
    lock = FolderLock(tmp_path / "cell")
    assert lock.acquire() == taken
    owner = json.loads((tmp_path / "cell" / LOCK_FILE).read_text())
    assert owner["token"] == (lock.token if taken else planted["token"])
    assert (lock.took_over is not None) == taken


def test_an_unreadable_lock_is_taken_over_once_it_is_old(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / LOCK_FILE).write_text("{half a rec")
    assert not FolderLock(folder).acquire()
    old = time.time() - STALE_S - 5
    os.utime(folder / LOCK_FILE, (old, old))
    assert FolderLock(folder).acquire()


def test_an_owner_that_lost_its_lock_knows_and_leaves_the_new_one(tmp_path):
    old, new = FolderLock(tmp_path / "cell"), FolderLock(tmp_path / "cell")
    assert old.acquire()
    record = json.loads((tmp_path / "cell" / LOCK_FILE).read_text())
    record["heartbeat"] -= STALE_S + 5  # as if the old owner had been stopped for minutes
    (tmp_path / "cell" / LOCK_FILE).write_text(json.dumps(record))
    assert new.acquire() and "no heartbeat" in new.took_over
    assert not old.heartbeat(every_s=0) and not old.held
    old.release()
    assert new.owns()


def _race(folder, barrier, results) -> None:
    lock = FolderLock(folder)
    barrier.wait()
    results.put(lock.acquire())
    # A winner that exited before a slow racer looked would be a dead owner, rightly taken over.
    barrier.wait()


@pytest.mark.parametrize("stale", [False, True])
def test_of_many_racing_runners_exactly_one_gets_the_lock(tmp_path, stale):
    folder = tmp_path / "cell"
    if stale:
        plant(folder, pid=dead_pid())
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(8), context.Queue()
    racers = [context.Process(target=_race, args=(folder, barrier, results)) for _ in range(8)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=30)
    wins = [results.get(timeout=5) for _ in racers]
    assert wins.count(True) == 1


@pytest.mark.parametrize("argv", [["--dryrun"], ["--work", "2"], ["--foo=1"], ["extra"]])
def test_a_mistyped_runner_flag_is_refused_with_the_runners_flags(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["sweeps/fig3_cnn_depth.yaml", *argv])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert argv[0] in error and "--dry-run" in error and "--workers" in error


def test_overrides_for_every_cell_pass_and_runner_flags_need_their_exact_name():
    args = parse_args(
        ["f.yaml", "--dry-run", "--workers", "2", "--trainer.max_steps=10", "--seed_everything=3"]
    )
    assert args.dry_run and args.workers == 2
    assert args.extra == ["--trainer.max_steps=10", "--seed_everything=3"]


def test_a_smoke_test_with_overrides_never_marks_the_real_cells_done(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {"model.depth": {"values": [1, 2]}}))
    real = OfflineRunner(sweep, tmp_path / "out", workers=1)
    smoke = OfflineRunner(sweep, tmp_path / "out", workers=1, extra_args=["--trainer.max_steps=10"])
    other = OfflineRunner(sweep, tmp_path / "out", workers=1, extra_args=["--trainer.max_steps=20"])
    assert [c.folder.name.split("-")[0] for c in smoke.cells] == ["depth=1", "depth=2"]
    folders = [{c.folder for c in r.cells} for r in (real, smoke, other)]
    assert not (folders[0] & folders[1]) and not (folders[1] & folders[2])
    for cell in smoke.cells:  # the smoke test ran
        cell.folder.mkdir(parents=True)
        write_cell_done(cell.folder, cell.params, 1.0, smoke.command(cell), smoke.extra_args)
    assert len(smoke.plan()[1]) == 2 and real.plan() == (real.cells, [])
    record = json.loads((smoke.cells[0].folder / CELL_DONE).read_text())
    assert record["command"][-1] == "--trainer.max_steps=10"
    assert record["overrides"] == ["--trainer.max_steps=10"] and "seconds" in record


def test_a_cell_the_cli_would_refuse_stops_the_sweep_before_anything_starts(tmp_path, capsys):
    parameters = {"model.depth": {"values": [1, 0]}, "seed_everything": {"value": 0}}
    path = write_sweep(tmp_path, parameters)
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--out", str(tmp_path / "out"), "--trainer.max_steps=5"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert "cell 1 (model.depth=0 seed_everything=0)" in error
    assert "--model.depth=0 is not valid" in error
    assert not (tmp_path / "out").exists()


def test_an_unknown_key_in_the_sweep_file_is_refused_in_one_line(tmp_path, capsys):
    path = write_sweep(tmp_path, {"model.depht": {"value": 1}, "seed_everything": {"value": 0}})
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "cell 0 (model.depht=1" in error
    assert "depht" in error.split("):", 1)[1]
    assert not (tmp_path / "out").exists()


def test_the_takeover_time_comes_from_the_flag_else_the_environment_else_two_minutes(
    monkeypatch, capsys
):
    monkeypatch.delenv(TAKEOVER_ENV, raising=False)
    assert parse_args(["f.yaml"]).takeover_s == STALE_S == 120
    monkeypatch.setenv(TAKEOVER_ENV, "30")
    assert parse_args(["f.yaml"]).takeover_s == 30
    assert parse_args(["f.yaml", "--takeover-s", "2.5"]).takeover_s == 2.5
    for wrong in (["--takeover-s", "0"], ["--takeover-s", "soon"]):
        with pytest.raises(SystemExit) as exit_:
            parse_args(["f.yaml", *wrong])
        assert exit_.value.code == 2 and "--takeover-s=" in capsys.readouterr().err
    monkeypatch.setenv(TAKEOVER_ENV, "-1")
    with pytest.raises(SystemExit):
        parse_args(["f.yaml"])
    assert f"${TAKEOVER_ENV}='-1'" in capsys.readouterr().err


def test_a_short_takeover_time_beats_faster_and_never_judges_a_slower_owner(tmp_path):
    # An owner on another host that promised 120 s, silent for 10: alive to any taker.
    elsewhere = {"host": "elsewhere", "heartbeat": time.time() - 10}
    plant(tmp_path / "slow", **elsewhere, takeover_s=120.0)
    assert not FolderLock(tmp_path / "slow", stale_s=5).acquire()
    plant(tmp_path / "fast", **elsewhere, takeover_s=5.0)
    taker = FolderLock(tmp_path / "fast", stale_s=5)
    assert taker.acquire() and "no heartbeat" in taker.took_over
    # The owner's own beat keeps well inside its takeover time.
    lock = FolderLock(tmp_path / "mine", stale_s=0.4)
    assert lock.acquire() and lock.record()["takeover_s"] == 0.4
    first = json.loads(lock.path.read_text())["heartbeat"]
    time.sleep(0.15)
    assert lock.heartbeat() and json.loads(lock.path.read_text())["heartbeat"] > first


def _tiny_runner(tmp_path, takeover_s=None) -> OfflineRunner:
    """Two cells; the first done by another runner, the second held by this test process."""
    sweep = load_sweep(write_sweep(tmp_path, {"model.depth": {"values": [1, 2]}}))
    runner = OfflineRunner(sweep, tmp_path / "out", workers=1, takeover_s=takeover_s)
    done = runner.cells[0]
    done.folder.mkdir(parents=True)
    write_cell_done(done.folder, done.params, 1.0, runner.command(done), [])
    runner.checked = True  # nothing is started here: no need to parse the cells as `fit` would
    return runner


def test_a_runner_out_of_cells_leaves_them_to_a_live_watcher_and_says_how_many(tmp_path, capsys):
    runner = _tiny_runner(tmp_path)
    held = FolderLock(runner.cells[1].folder)
    watcher = FolderLock(runner.root, WATCH_FILE)
    assert held.acquire() and watcher.acquire()
    counts = runner.run(poll_s=0.01)
    output = capsys.readouterr().out
    assert counts["left"] == 1 and counts["undone"] == 0 and counts["others"] == 1, output
    assert f"leaving: 1 cell(s) still held by other runners; runner pid {os.getpid()}" in output
    assert held.owns() and watcher.owns()


@pytest.mark.parametrize("ends", ["done", "failed"])
def test_the_last_runner_waits_for_held_cells_and_names_those_not_done(tmp_path, capsys, ends):
    runner = _tiny_runner(tmp_path, takeover_s=2.0)
    cell = runner.cells[1]
    held = FolderLock(cell.folder, stale_s=2.0)
    assert held.acquire()
    result = {}
    thread = threading.Thread(target=lambda: result.update(runner.run(poll_s=0.01)), daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not (runner.root / WATCH_FILE).exists() and time.time() < deadline:
        held.heartbeat()
        time.sleep(0.05)
    # The runner watches; the held cell is left alone for as long as its owner beats.
    for _ in range(60):  # 3 s, past the takeover time
        assert held.heartbeat() and thread.is_alive()
        time.sleep(0.05)
    if ends == "done":
        write_cell_done(cell.folder, cell.params, 1.0, runner.command(cell), [])
    else:
        write_cell_failed(cell.folder, cell.params, 1, "exit code 1, run status failed")
    held.release()
    thread.join(timeout=30)
    output = capsys.readouterr().out
    assert not thread.is_alive() and "waiting for 1 cell(s) held by other runners" in output
    assert result["undone"] == (ends == "failed") and result["left"] == 0, output
    if ends == "failed":
        assert f"1 of 2 cells not done: [2/2] {cell.folder.name}" in output
    assert not (runner.root / WATCH_FILE).exists()
