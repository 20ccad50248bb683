"""Several offline runners on one sweep at once: the cell locks split the cells, so each is
trained exactly once; a lock left by a dead runner, here or on a silent host, is taken over."""

import json
import os
import subprocess
import time

import pytest

from identity_crisis.locks import LOCK_FILE, FolderLock
from identity_crisis.run_folder import CELL_DONE
from identity_crisis.sweep import WATCH_FILE, OfflineRunner
from identity_crisis.sweep_file import load_sweep
from tests.test_sweeps import (
    REPO,
    attempts,
    run_sweep,
    start_runner,
    tiny_cells,
    trainings,
    write_sweep,
)

CELLS = tiny_cells(steps=50, seeds=4)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# Four runners show nothing two do not (the lock tests race eight processes for one lock) and
# cost another minute of CPU: marked slow, `-m "not slow"` leaves them out.
@pytest.mark.parametrize("runners", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_runners_at_once_train_every_cell_exactly_once(tmp_path, data_root, runners):
    path = write_sweep(tmp_path, CELLS)
    out, root = tmp_path / "out", f"--data.root={data_root}"
    # The second cell holds the lock of a runner that died on this host (say, SIGKILLed).
    cells = OfflineRunner(load_sweep(path), out, workers=1, extra_args=[root]).cells
    stale = cells[1].folder
    stale.mkdir(parents=True)
    record = FolderLock(stale).record() | {"pid": dead_pid(), "pid_start": None}
    (stale / LOCK_FILE).write_text(json.dumps(record))

    logs = [tmp_path / f"runner-{i}.log" for i in range(runners)]
    procs = [start_runner(path, out, log, "--workers", "1", root) for log in logs]
    codes = [proc.wait(timeout=900) for proc in procs]
    outputs = "\n".join(log.read_text() for log in logs)
    assert codes == [0] * runners, outputs
    started = [attempts(cell.folder) for cell in cells]
    trained = [trainings(cell.folder) for cell in cells]
    print(f"{runners} runners: starts per cell {started}, trainings per cell {trained}")
    assert all((cell.folder / CELL_DONE).is_file() for cell in cells), outputs
    assert started == [1] * len(cells) and trained == [1] * len(cells), outputs
    assert outputs.count("] take over") == 1 and f"pid {record['pid']}" in outputs
    assert not list(out.glob(f"tiny/*/{LOCK_FILE}"))
    record = json.loads((cells[0].folder / CELL_DONE).read_text())
    assert record["command"][3] == "fit" and record["command"][-1] == root
    assert record["overrides"] == [root] and record["params"] == cells[0].params
    # Between them the runners did each cell once, the others left it to them.
    done = sum(
        int(line.split(": ")[1].split()[0])
        for line in outputs.splitlines()
        if line.startswith("sweep tiny: ") and " done, " in line
    )
    assert done == len(cells)


@pytest.mark.parametrize(
    "gpus, slots",
    [(None, "--workers 1"), ("3", "--gpus [3] --per-gpu 1")],
)
def test_the_slurm_offline_script_runs_one_runner_per_task(gpus, slots):
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_FILE", "CUDA_VISIBLE_DEVICES")}
    env["RUNNER_DRY_RUN"] = "1"
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    script = "sweeps/slurm_offline.sbatch"
    result = subprocess.run(
        ["bash", script, "sweeps/fig3_cnn_depth.yaml", "--trainer.max_steps=5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    command = f"identity-crisis sweep sweeps/fig3_cnn_depth.yaml {slots} --trainer.max_steps=5"
    assert result.stdout.splitlines()[-1] == command
    missing = subprocess.run(["bash", script], capture_output=True, text=True, cwd=REPO, env=env)
    assert missing.returncode == 2 and "usage:" in missing.stderr


def test_a_command_naming_args_json_file_finds_the_cells_values_there(tmp_path):
    """${args_json_file} names a file in the cell's folder that holds the cell's values as JSON,
    as W&B's agent writes it; this command reads it before it trains."""
    program = tmp_path / "read_values.py"
    program.write_text(
        "import json, os, sys\n"
        "sys.path.insert(0, os.getcwd())\n"
        "from identity_crisis.cli import main\n"
        "values = json.load(open(sys.argv[1]))\n"
        "assert values['seed_everything'] in (0, 1) and values['model.depth'] == 1, values\n"
        "main(['fit', '--config', 'configs/cnn.yaml', *sys.argv[2:]])\n"
    )
    command = ["${env}", "${interpreter}", "${program}", "${args_json_file}", "${args}"]
    parameters = tiny_cells(steps=5, seeds=2)
    path = write_sweep(tmp_path, parameters, command=command, program=str(program))
    done = run_sweep(path, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    written = sorted((tmp_path / "out").glob("tiny/*/args.json"))
    assert sorted(json.loads(p.read_text())["seed_everything"] for p in written) == [0, 1]


def _beat(path, record: dict) -> None:
    """What a live runner on another host does to its lock: a fresh heartbeat, atomically."""
    tmp = path.with_name(".beat.tmp")
    tmp.write_text(json.dumps(record | {"heartbeat": time.time()}))
    os.replace(tmp, path)


def test_a_cell_of_a_silent_host_is_taken_over_and_a_beating_one_left_alone(tmp_path, data_root):
    path = write_sweep(tmp_path, tiny_cells(steps=5, seeds=3))
    out, root, takeover = tmp_path / "out", f"--data.root={data_root}", 3.0
    cells = OfflineRunner(load_sweep(path), out, workers=1, extra_args=[root]).cells
    # Locks of runners on another host: the second cell's silent for a minute, the third's
    # beating (this test beats it) until the runner has waited past the takeover time for it.
    foreign = {"host": "node-elsewhere", "pid": 4242, "pidns": None, "pid_start": None}
    records = []
    for cell, silent in ((cells[1], 60.0), (cells[2], 0.0)):
        cell.folder.mkdir(parents=True)
        record = FolderLock(cell.folder, stale_s=takeover).record() | foreign
        records.append(record | {"heartbeat": time.time() - silent})
        (cell.folder / LOCK_FILE).write_text(json.dumps(records[-1]))
    beating = cells[2].folder / LOCK_FILE

    log = tmp_path / "runner.log"
    runner = start_runner(path, out, log, "--workers", "1", "--takeover-s", str(takeover), root)
    waited_since = None
    while runner.poll() is None:
        if waited_since is None and "waiting for 1 cell(s)" in log.read_text():
            waited_since = time.time()
        if waited_since is None or time.time() - waited_since < 2 * takeover:
            assert json.loads(beating.read_text())["token"] == records[1]["token"], "taken alive"
            _beat(beating, records[1])
        elif time.time() - waited_since > 300:
            runner.kill()
            pytest.fail(log.read_text())
        time.sleep(0.2)
    output = log.read_text()
    assert runner.returncode == 0 and waited_since is not None, output
    assert all((cell.folder / CELL_DONE).is_file() for cell in cells), output
    assert [trainings(cell.folder) for cell in cells] == [1, 1, 1], output
    assert output.count("] take over") == 2, output
    assert output.count("no heartbeat from pid 4242 on node-elsewhere") == 2, output
    assert not list(out.glob(f"tiny/*/{LOCK_FILE}")) and not (out / "tiny" / WATCH_FILE).exists()
