"""The offline runner stopped mid-grid by each signal, then rerun: no cell lost, none trained
twice, no process left behind."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from identity_crisis.locks import process_alive
from identity_crisis.run_folder import CELL_DONE, CELL_FAILED
from tests.test_sweeps import (
    attempts,
    run_sweep,
    scored_attempts,
    start_runner,
    tiny_cells,
    training_now,
    trainings,
    write_sweep,
)

LINUX = sys.platform.startswith("linux")
# Five one-layer, two-channel nets, each trained a fixed 400 steps (about 2 s: long enough for
# a signal sent once training has started to land while it trains).
KILL_CELLS = tiny_cells(steps=400, seeds=5)
# Each stop: the signal and the runner's exit status (Popen's -9 for a SIGKILL).
STOPS = [
    (signal.SIGINT, 130),
    (signal.SIGTERM, 143),
    (signal.SIGHUP, 129),
    (signal.SIGKILL, -9),
]


def process_tree(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every descendant of `pid`: the cells, their W&B service processes."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    tree, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            tree.append(child)
            stack.append(child[0])
    return tree


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def survivors(tree: list[tuple[int, str]], wait_s: float = 20.0) -> list[int]:
    """The processes of `tree` still alive after up to `wait_s` seconds (W&B's service processes
    notice their parent is gone within a few)."""
    deadline = time.time() + wait_s
    while True:
        alive = [pid for pid, start in tree if process_alive(pid, start)]
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


def wait_for(predicate, runner, log: Path, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if runner.poll() is not None:
            pytest.fail(f"the runner ended early ({runner.returncode}):\n{log.read_text()}")
        if time.time() > deadline:
            runner.kill()
            pytest.fail(f"timed out waiting for the runner:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_each_stop_signal_mid_grid_then_a_rerun_loses_and_repeats_nothing(tmp_path, data_root):
    path = write_sweep(tmp_path, KILL_CELLS)
    out, root = tmp_path / "out", f"--data.root={data_root}"
    sweep_dir = out / "tiny"
    measured = []
    # Runner k finishes the cell runner k-1 left (or the first) and is stopped while it trains
    # the next: a done cell behind it, one running, the rest never started.
    for k, (sig, status) in enumerate(STOPS):
        log = tmp_path / f"runner-{k}.log"
        runner = start_runner(path, out, log, "--workers", "1", root)

        def mid_grid(k=k):
            cells = [cell for cell in sweep_dir.glob("*") if cell.is_dir()]
            done = sum((cell / CELL_DONE).is_file() for cell in cells)
            return done >= k + 1 and any(training_now(cell) for cell in cells)

        wait_for(mid_grid, runner, log)
        (running,) = [cell for cell in sweep_dir.iterdir() if training_now(cell)]
        tree = process_tree(runner.pid)
        assert any(str(running) in cmdline(pid) for pid, _ in tree), "the cell's process"
        runner.send_signal(sig)
        assert runner.wait(timeout=60) == status, log.read_text()
        orphans = survivors(tree)
        measured.append((sig.name, running, len(tree), orphans))
        assert not orphans, f"{sig.name}: processes left behind: {orphans}"
        assert not (running / CELL_DONE).exists()
        if sig != signal.SIGKILL:
            reason = (running / CELL_FAILED).read_text()
            assert f"interrupted ({sig.name})" in reason, log.read_text()
            assert not list(sweep_dir.glob("*/lock.json")), "a stopped runner released its locks"
        else:  # nothing could run in the runner: its lock stays, for the rerun to take over
            assert (running / "lock.json").is_file()

    final = run_sweep(path, out, "--workers", "1", root)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "take over" in final.stdout and "is gone" in final.stdout
    cells = sorted(sweep_dir.iterdir())
    lost = 5 - sum((cell / CELL_DONE).is_file() for cell in cells)
    # Trained again after a run that scored: fine only for a stopped cell (its done.json never
    # written), which the rerun trains once more.
    stopped = {running for _, running, _, _ in measured}
    duplicated = [
        cell.name
        for cell in cells
        if scored_attempts(cell)[-1:] != [True] or (cell not in stopped and trainings(cell) != 1)
    ]
    for name, running, processes, orphans in measured:
        print(
            f"{name}: stopped {running.name[-8:]} -> done {(running / CELL_DONE).is_file()}, "
            f"trained {trainings(running)}x in {attempts(running)} starts, "
            f"orphans {len(orphans)} of {processes} processes under the runner"
        )
    print(f"after the rerun: {len(cells)} cells, lost {lost}, trained more than once {duplicated}")
    assert len(cells) == 5 and lost == 0 and not duplicated
    # Every stopped cell was started again once, the first cell (done before any stop) once.
    assert sorted(attempts(cell) for cell in cells) == [1, 2, 2, 2, 2]
    assert not list(sweep_dir.glob("*/lock.json")) and not list(sweep_dir.glob("*/failed.json"))


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_a_runner_killed_mid_cell_leaves_its_cell_to_the_survivor(tmp_path, data_root):
    """Two runners share six cells; one is SIGKILLed while it trains a cell the other has already
    walked past. The survivor comes back for it and ends with the whole sweep done."""
    # Cells that train for seconds (3000 steps took about one here): the test must catch the
    # victim training a cell the survivor has already walked past, and with one-second
    # trainings it missed every one in 1 of 4 runs, the victim ending its share first.
    path = write_sweep(tmp_path, tiny_cells(steps=15000, seeds=6))
    out, root = tmp_path / "out", f"--data.root={data_root}"
    sweep_dir = out / "tiny"
    logs = [tmp_path / "survivor.log", tmp_path / "victim.log"]
    survivor, victim = (start_runner(path, out, log, "--workers", "1", root) for log in logs)

    def victim_mid_cell_survivor_past_it() -> tuple[Path, dict] | None:
        for cell in sweep_dir.glob("*"):
            if training_now(cell) and f"held  {cell.name}" in logs[0].read_text():
                try:
                    owner = json.loads((cell / "lock.json").read_text())
                except (OSError, ValueError):  # the cell just ended
                    continue
                if owner["pid"] == victim.pid:
                    return cell, owner
        return None

    wait_for(victim_mid_cell_survivor_past_it, victim, logs[1])
    killed, owner = victim_mid_cell_survivor_past_it()
    # The lock names the process that trains the cell: the survivor waits for it too.
    assert owner["cell_pid"] in [pid for pid, _ in process_tree(victim.pid)]
    victim.kill()
    assert victim.wait(timeout=60) == -9
    try:
        code = survivor.wait(timeout=600)
    except subprocess.TimeoutExpired:
        survivor.kill()
        pytest.fail(logs[0].read_text())
    output = logs[0].read_text()
    cells = sorted(cell for cell in sweep_dir.iterdir() if cell.is_dir())
    assert code == 0, output
    assert len(cells) == 6 and all((cell / CELL_DONE).is_file() for cell in cells), output
    others = [cell for cell in cells if cell != killed]
    assert [scored_attempts(cell) for cell in others] == [[True]] * 5, output
    # The survivor's run scored the killed cell. The victim's run was killed while it trained;
    # had the kill landed between its results and done.json, nothing was recorded and the
    # second training would be the right one, so only the survivor's run is asserted.
    victims_run, survivors_run = scored_attempts(killed)
    print(f"the victim's run printed its results before the kill: {victims_run}")
    assert survivors_run and f"take over {killed.name}: its runner (pid" in output
    assert not list(sweep_dir.glob("*/lock.json")) and not list(sweep_dir.glob("*/failed.json"))
    # It came back for the cell as the runner that waits, not by chance in its first walk.
    assert "waiting for 1 cell(s) held by other runners" in output and "leaving:" not in output
