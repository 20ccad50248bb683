"""Workers: one process trains many sweep cells. Two cells in one worker score exactly as in two
processes; a diverged cell leaves the worker to the next cell, a crash retires it for a fresh one;
a stopped worker records its cell interrupted and leaves nothing behind; the in-process W&B agent
fills the command the runner fills."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

from identity_crisis.cell_processes import in_process_argv
from identity_crisis.run_folder import CELL_DONE, CELL_FAILED
from identity_crisis.sweep import OfflineRunner
from identity_crisis.sweep_file import fill_command, load_sweep
from identity_crisis.wandb_agent import agent_argv, agent_params
from tests.test_sweep_kill import LINUX, cmdline, process_tree, survivors, wait_for
from tests.test_sweeps import (
    REPO,
    cell_log,
    run_sweep,
    start_runner,
    write_sweep,
)

# Two one-layer, four-channel nets, 20 steps each: seconds of training, the rest is start-up.
TWO_CELLS = {
    "model.depth": {"value": 1},
    "model.channels": {"value": 4},
    "trainer.max_steps": {"value": 20},
    "trainer.min_steps": {"value": 20},
    "data.test_size": {"value": 8},
    "seed_everything": {"values": [0, 1]},
}
# A callback that raises at the end of training: a crash, not a failed run.
CRASH = [{"class_path": "pytorch_lightning.callbacks.EarlyStopping", "init_args": {"monitor": "x"}}]
WORKER_LINE = re.compile(r"^in worker (\d+), its cell (\d+)$", re.M)


def cells(path, out, *extra) -> list:
    return OfflineRunner(load_sweep(path), out, workers=1, extra_args=list(extra)).cells


def workers(cell) -> list[tuple[int, int]]:
    """(worker pid, its cell number) of each start of the cell, from the runner's log line."""
    return [(int(pid), int(n)) for pid, n in WORKER_LINE.findall(cell_log(cell.folder))]


def result(cell) -> tuple[dict, np.ndarray | None]:
    """metrics.json whole, and the probe outputs, of a cell's run."""
    run = cell.folder / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    predictions = run / "probe_predictions.npz"
    if not predictions.is_file():
        return metrics, None
    with np.load(predictions) as data:
        return metrics, data["outputs"]


def test_two_cells_in_one_worker_score_as_in_two_processes(tmp_path, data_root):
    path = write_sweep(tmp_path, TWO_CELLS)
    root = f"--data.root={data_root}"
    shared, isolated = tmp_path / "worker", tmp_path / "isolated"
    for out, flags in ((shared, []), (isolated, ["--isolate"])):
        done = run_sweep(path, out, "--workers", "1", root, *flags)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 done, 0 skipped" in done.stdout
    in_worker, alone = cells(path, shared, root), cells(path, isolated, root)
    (pid, first), (same_pid, second) = workers(in_worker[0])[0], workers(in_worker[1])[0]
    assert pid == same_pid and (first, second) == (1, 2), "both cells in one worker"
    assert not any(workers(cell) for cell in alone), "a process per cell"
    for a, b in zip(in_worker, alone, strict=True):
        (metrics_a, outputs_a), (metrics_b, outputs_b) = result(a), result(b)
        assert metrics_a["status"] == "ok" and metrics_a == metrics_b
        assert np.array_equal(outputs_a, outputs_b)
    # The seeds differ, so equal results are not one cell's scores written twice.
    assert result(in_worker[0])[0]["metrics"] != result(in_worker[1])[0]["metrics"]
    # Folders finished by a process per cell are done for the workers too, and the other way.
    for out in (shared, isolated):
        todo, done = OfflineRunner(load_sweep(path), out, workers=1, extra_args=[root]).plan()
        assert not todo and len(done) == 2


def test_a_diverged_cell_leaves_the_worker_and_a_crash_gets_a_fresh_one(tmp_path, data_root):
    parameters = {**TWO_CELLS, "seed_everything": {"value": 0}}
    parameters |= {"model.optimizer": {"value": "sgd"}, "model.check_every": {"value": 2}}
    # In order: a crash (lr 0.01), a divergence (lr 1e4 diverges long before the crash point),
    # a good run, a divergence.
    parameters |= {"trainer.callbacks": {"values": [CRASH, []]}}
    parameters |= {"model.lr": {"values": [0.01, 1.0e4]}}
    path = write_sweep(tmp_path, parameters)
    spec = yaml.safe_load(path.read_text())  # written with sorted keys; the grid's order here
    path.write_text(yaml.safe_dump({**spec, "parameters": parameters}, sort_keys=False))
    out, root = tmp_path / "out", f"--data.root={data_root}"
    done = run_sweep(path, out, "--workers", "1", root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 done, 0 skipped (done before), 3 failed, 0 interrupted" in done.stdout
    crash, diverged, good, last = cells(path, out, root)
    status = {
        name: json.loads((cell.folder / "run" / "metrics.json").read_text())["status"]
        for name, cell in (("crash", crash), ("diverged", diverged), ("good", good))
    }
    assert status == {"crash": "crashed", "diverged": "failed", "good": "ok"}
    assert "Traceback" in cell_log(crash.folder) and "diverged" in cell_log(diverged.folder)
    assert (good.folder / CELL_DONE).is_file() and (last.folder / CELL_FAILED).is_file()
    record = json.loads((crash.folder / CELL_FAILED).read_text())
    assert record["returncode"] == 1 and "crashed" in record["reason"]
    (first,), (second,), (third,), (fourth,) = (workers(c) for c in (crash, diverged, good, last))
    assert second[0] != first[0] and second[1] == 1, "the crash retired its worker"
    assert [third, fourth] == [(second[0], 2), (second[0], 3)], "a diverged run did not"


@pytest.mark.skipif(not LINUX, reason="/proc")
def test_a_stopped_worker_records_its_cell_interrupted_and_leaves_nothing(tmp_path, data_root):
    endless = {"trainer.max_steps": {"value": 10**7}, "model.stop_loss": {"value": None}}
    path = write_sweep(tmp_path, {**TWO_CELLS, **endless})
    out, log = tmp_path / "out", tmp_path / "runner.log"
    runner = start_runner(path, out, log, "--workers", "1", f"--data.root={data_root}")
    first = cells(path, out, f"--data.root={data_root}")[0]
    # In the training loop, where Lightning turns the Ctrl-C into an interrupted run.
    wait_for(lambda: "\ntraining: " in cell_log(first.folder), runner, log)
    tree = process_tree(runner.pid)
    (pid, _), *_ = workers(first)
    assert any(p == pid for p, _ in tree) and str(first.folder) in cmdline(pid)
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=60) == 130, log.read_text()
    assert not survivors(tree), "the worker and its W&B service are gone"
    reason = json.loads((first.folder / CELL_FAILED).read_text())["reason"]
    assert "interrupted (SIGINT)" in reason
    metrics = json.loads((first.folder / "run" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert (
        not list(out.glob("tiny/*/lock.json")) and not (first.folder / "run" / "run.lock").exists()
    )
    assert "0 done" in log.read_text() and "1 interrupted" in log.read_text()


def test_the_agents_command_is_the_runners_and_a_run_values_file_reads(tmp_path):
    path = write_sweep(
        tmp_path, {"model.depth": {"values": [1, 2]}, "data.train_class": {"value": None}}
    )
    sweep = load_sweep(path)
    params = {"model.depth": 2, "data.train_class": None}
    # The file `wandb.agent` writes for a run: wandb_version, then key: {value: ...}.
    values = tmp_path / "config-abc.yaml"
    values.write_text(
        "wandb_version: 1\n\n" + yaml.safe_dump({k: {"value": v} for k, v in params.items()})
    )
    assert agent_params(values) == params
    argv = agent_argv(sweep, params, ["--trainer.max_steps=5"])
    runner = in_process_argv(fill_command(sweep, params))
    assert argv == [*runner[:-1], "--data.train_class=null", "--trainer.max_steps=5"]
    assert argv[:3] == ["fit", "--config", "configs/cnn.yaml"] and "--model.depth=2" in argv
    other = load_sweep(
        write_sweep(tmp_path, {"model.depth": {"value": 1}}, command=["python", "x.py", "${args}"])
    )
    with pytest.raises(ValueError, match="command path"):
        agent_argv(other, {"model.depth": 1}, [])


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--help"], 0, "entity/project/id"),
        (["a/b/c", "sweeps/nope.yaml"], 2, "does not exist"),
        (["a/b/c", "sweeps/fig2_fcn.yaml", "--count", "0"], 2, "--count=0"),
        (["a/b/c", "sweeps/fig2_fcn.yaml", "--max_steps=3"], 2, "--section.key=value"),
    ],
)
def test_the_agent_command_parses_before_it_needs_a_server(args, code, needle):
    done = subprocess.run(
        [sys.executable, "-m", "identity_crisis.commands", "agent", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == code and needle in done.stdout + done.stderr


AGENT_CALL = """
import sys, threading
from identity_crisis.wandb_agent import agent_cell
from identity_crisis.sweep_file import load_sweep
errors = []
def call():
    try:
        agent_cell(load_sweep(sys.argv[1]), sys.argv[2:])
    except BaseException as error:
        errors.append(error)
thread = threading.Thread(target=call)  # as wandb.agent calls its function
thread.start()
thread.join()
sys.exit(f"agent_cell raised {errors[0]!r}" if errors else 0)
"""


def test_the_agents_function_trains_a_run_from_a_thread_as_the_agent_calls_it(tmp_path, data_root):
    # What wandb.agent does before it calls the function, less the server: the run's values in
    # a file, its id and sweep in the environment (offline here).
    path = write_sweep(tmp_path, TWO_CELLS)
    values = tmp_path / "config-run.yaml"
    params = {
        key: spec.get("value", spec.get("values", [None])[0]) for key, spec in TWO_CELLS.items()
    }
    values.write_text(
        "wandb_version: 1\n\n" + yaml.safe_dump({k: {"value": v} for k, v in params.items()})
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SWEEP_ID": "abc123"}
    env |= {"WANDB_RUN_ID": "run00042", "WANDB_SWEEP_PARAM_PATH": str(values)}
    env.pop("WANDB_SERVICE", None)
    extra = [f"--data.root={data_root}", f"--run.root={tmp_path / 'runs'}"]
    done = subprocess.run(
        [sys.executable, "-c", AGENT_CALL, str(path), *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = (tmp_path / "runs").glob("*/*")
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    assert list(run.glob("wandb/offline-run-*-run00042")), "the agent's run, not a new one"
    assert "-s0" in run.name and "final training MSE" in done.stdout


@pytest.mark.parametrize(
    "command, in_process, checked",
    [
        (["/usr/bin/env", "{python}", "identity_crisis/cli.py", "fit", "--x=1"], True, True),
        (["{python}", "-m", "identity_crisis.cli", "fit"], True, True),
        (["/opt/other/bin/python3", "identity_crisis/cli.py", "fit", "--x=1"], False, True),
        (["/opt/other/bin/identity-crisis", "fit"], False, True),
        (["{python}", "identity_crisis/cli.py", "test", "--x=1"], False, False),
        (["{python}", "train.py", "fit"], False, False),
        (["bash", "-c", "identity_crisis/cli.py fit"], False, False),
    ],
)
def test_one_recogniser_says_which_cells_train_in_process_and_which_are_checked(
    command, in_process, checked
):
    """A cell trains in the worker only when this Python runs this project's `fit`; the runner
    checks the arguments of any interpreter's `fit` of this project before anything trains."""
    command = [word.format(python=sys.executable) for word in command]
    assert (in_process_argv(command) is not None) is in_process
    found = in_process_argv(command, any_python=True)
    assert (found is not None) is checked
    if checked:
        assert found[0] == "fit" and found[1:] == command[command.index("fit") + 1 :]
