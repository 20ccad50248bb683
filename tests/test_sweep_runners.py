"""Several offline runners on one sweep at once: the cell locks split the cells, so each is
trained exactly once; a lock left by a dead runner is taken over."""

import json
import os
import subprocess

import pytest

from identity_crisis.locks import LOCK_FILE, FolderLock
from identity_crisis.run_folder import CELL_DONE
from identity_crisis.sweep import OfflineRunner, load_sweep
from tests.test_sweeps import REPO, attempts, start_runner, trainings, write_sweep

CELLS = {
    "model.depth": {"value": 1},
    "model.channels": {"value": 2},
    "model.stop_loss": {"value": None},
    "trainer.min_steps": {"value": 0},
    "trainer.max_steps": {"value": 50},
    "data.test_size": {"value": 4},
    "data.test_sets": {"value": ["mnist"]},
    "seed_everything": {"values": [0, 1, 2, 3]},
}


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
    assert outputs.count("take over") == 1 and f"pid {record['pid']}" in outputs
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
    [(None, "--workers 1"), ("3", "--gpus 3 --per-gpu 1")],
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
