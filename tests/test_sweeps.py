"""Sweep files, their expansion into commands the real CLI accepts, and the offline runner."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from identity_crisis.cell_processes import default_sigint
from identity_crisis.cli import IdentityCrisisCLI, wandb_args
from identity_crisis.run_folder import CELL_DONE, CELL_FAILED
from identity_crisis.sweep import OfflineRunner
from identity_crisis.sweep_file import SweepError, expand, fill_command, load_sweep

REPO = Path(__file__).resolve().parent.parent
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))


def cli_args(sweep, params) -> list[str]:
    """What follows the program in the filled command, as the CLI receives it."""
    command = fill_command(sweep, params)
    return wandb_args(command[command.index(sweep.program) + 1 :])


def test_there_is_a_sweep_per_paper_experiment():
    names = {path.stem for path in SWEEP_FILES}
    expected = {"fig2_fcn", "fig3_cnn_depth", "kernel_depth", "channels_depth"}
    expected |= {"linear_vs_relu_cnn", "resnet_depth", "cifar10_depth", "fcn_many_examples"}
    assert expected <= names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_follows_the_rules_and_its_cells_parse(path, data_root, cifar_root):
    sweep = load_sweep(path)
    cells = expand(sweep)
    assert cells, "no cells"
    assert "seed_everything" in sweep.parameters, "every sweep sets its seeds explicitly"
    seeds = {cell["seed_everything"] for cell in cells}
    # repro_* files are the CPU-sized reproductions behind REPRODUCTION.md, pictures not
    # threshold claims; every experiment file has at least 3 seeds per cell.
    assert len(seeds) >= 3 or sweep.method == "random" or path.stem.startswith("repro_")
    command = fill_command(sweep, cells[0])
    assert command[command.index(sweep.program) + 1] == "fit"
    # The base config comes first, so the sweep's values override it.
    assert command.index("--config") == min(i for i, c in enumerate(command) if c.startswith("--"))
    root = cifar_root[0] if any("cifar10" in json.dumps(c) for c in cells) else data_root
    for params in (cells[0], cells[-1]):
        args = cli_args(sweep, params)[1:]  # without the subcommand: run=False parses directly
        cli = IdentityCrisisCLI(args=[*args, f"--data.root={root}"], run=False)
        for key, value in params.items():
            section, name = key.split(".", 1) if "." in key else (None, key)
            config = cli.config if section is None else cli.config[section]
            if section == "model":
                config = config.init_args
            assert config[name] == value, f"{key} did not reach the config"


def tiny_cells(steps: int, seeds: int) -> dict:
    """Sweep parameters for `seeds` one-layer, two-channel nets trained exactly `steps` steps,
    probed on 4 MNIST digits: the runner tests' cells, seconds each."""
    return {
        "model.depth": {"value": 1},
        "model.channels": {"value": 2},
        "model.stop_loss": {"value": None},
        "trainer.min_steps": {"value": 0},
        "trainer.max_steps": {"value": steps},
        "data.test_size": {"value": 4},
        "data.test_sets": {"value": ["mnist"]},
        "seed_everything": {"values": list(range(seeds))},
    }


def write_sweep(tmp_path, parameters: dict, method="grid", **extra) -> Path:
    spec = {
        "name": "tiny",
        "program": "identity_crisis/cli.py",
        "method": method,
        "metric": {"name": "test/mnist/identity_corr", "goal": "maximize"},
        "command": ["${env}", "${interpreter}", "${program}", "fit", "--config"]
        + ["configs/cnn.yaml", "${args}"],
        "parameters": parameters,
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"methd": "grid"}, "unknown top-level key"),
        ({"method": "annealing"}, "method='annealing'"),
        ({"parameters": {"model": {"parameters": {"depth": {"value": 1}}}}}, "flat dotted"),
        ({"parameters": {"model.depth": {"distribution": "uniform", "min": 1, "max": 3}}}, "grid"),
        ({"parameters": {"model.depth": {"values": []}}}, "non-empty list"),
        ({"parameters": {"model.depth": 3}}, "expected a mapping"),
        ({"command": ["${env}", "${interpreter}", "${program}"]}, "no arguments macro"),
        ({"metric": {"name": "x", "goal": "up"}}, "goal='up'"),
    ],
)
def test_malformed_sweep_files_are_refused(tmp_path, change, needle):
    path = write_sweep(tmp_path, {"model.depth": {"values": [1, 2]}})
    spec = yaml.safe_load(path.read_text())
    spec.update(change)
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SweepError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        expand(load_sweep(path))


def test_grid_is_the_cartesian_product_and_random_is_seeded(tmp_path):
    grid = load_sweep(
        write_sweep(
            tmp_path, {"model.depth": {"values": [1, 2, 3]}, "seed_everything": {"values": [0, 1]}}
        )
    )
    assert expand(grid) == [
        {"model.depth": d, "seed_everything": s} for d in (1, 2, 3) for s in (0, 1)
    ]
    parameters = {"model.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}
    parameters["seed_everything"] = {"values": [0, 1, 2]}
    random_sweep = load_sweep(write_sweep(tmp_path, parameters, method="random", run_cap=5))
    draws = expand(random_sweep, seed=1)
    assert len(draws) == 5 and draws == expand(random_sweep, seed=1)
    assert draws != expand(random_sweep, seed=2)
    assert all(1e-4 <= d["model.lr"] <= 1e-2 for d in draws)


def test_commands_are_filled_as_a_wandb_agent_fills_them(tmp_path):
    sweep = load_sweep(
        write_sweep(tmp_path, {"model.depth": {"value": 3}, "data.train_class": {"value": None}})
    )
    command = fill_command(sweep, {"model.depth": 3, "data.train_class": None})
    assert command[:3] == ["/usr/bin/env", sys.executable, "identity_crisis/cli.py"]
    assert command[3:] == [
        "fit",
        "--config",
        "configs/cnn.yaml",
        "--model.depth=3",
        "--data.train_class=None",
    ]
    assert wandb_args(command)[-1] == "--data.train_class=null"


def run_sweep(path, out, *extra, timeout=300):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "identity_crisis.cli",
            "sweep",
            str(path),
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def _default_stop_signals() -> None:
    """The runner under test must see the signals sent to it, whatever its launcher ignores
    (a background job's SIGINT, nohup's SIGHUP)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start_runner(path, out, log: Path, *extra) -> subprocess.Popen:
    """The runner in the background, its output in `log` (a file: a pipe nobody reads fills)."""
    with open(log, "w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "identity_crisis.cli", "sweep", str(path), "--out", str(out)]
            + list(extra),
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=_default_stop_signals,
        )


def cell_log(cell: Path) -> str:
    path = cell / "log.txt"
    return path.read_text(errors="replace") if path.is_file() else ""


def attempts(cell: Path) -> int:
    """How many times a runner started the cell: each start appends `$ <command>` to its log."""
    return len(scored_attempts(cell))


SCORED = "final training MSE "


def trainings(cell: Path) -> int:
    """How many runs of the cell trained and scored to the end: `fit` prints its results table
    (`final training MSE ...`) only then; an interrupted run does not."""
    return sum(line.startswith(SCORED) for line in cell_log(cell).splitlines())


def scored_attempts(cell: Path) -> list[bool]:
    """Per start of the cell, in order: whether that run printed its results."""
    scored: list[bool] = []
    for line in cell_log(cell).splitlines():
        if line.startswith("$ "):
            scored.append(False)
        elif line.startswith(SCORED) and scored:
            scored[-1] = True
    return scored


def training_now(cell: Path) -> bool:
    """A runner holds the cell and its current attempt is training: started, no results yet (a
    stop after the results and before done.json is a different case, retrained by design)."""
    last = cell_log(cell).rsplit("\n$ ", 1)[-1]
    held = (cell / "lock.json").is_file() and not (cell / CELL_DONE).is_file()
    return held and "(group" in last and SCORED not in last


TINY = {
    "model.depth": {"values": [1, 2]},
    "model.channels": {"value": 4},
    "trainer.max_steps": {"value": 10},
    "data.test_size": {"value": 4},
    "data.test_sets": {"value": ["mnist", "patterns"]},
    "seed_everything": {"value": 0},
}


def test_offline_runner_runs_records_failures_and_resumes(tmp_path, data_root):
    # A huge SGD step diverges: one cell done, one failed.
    parameters = {**TINY, "model.depth": {"value": 1}, "model.optimizer": {"value": "sgd"}}
    parameters |= {"model.lr": {"values": [0.01, 1.0e4]}, "model.check_every": {"value": 2}}
    path = write_sweep(tmp_path, parameters)
    out = tmp_path / "out"
    dry = run_sweep(path, out, "--dry-run", f"--data.root={data_root}")
    assert dry.returncode == 0 and "2 cells: 0 done, 2 would run" in dry.stdout

    first = run_sweep(path, out, "--workers", "2", f"--data.root={data_root}")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "1 done, 0 skipped (done before), 1 failed" in first.stdout
    assert "wandb sync" in first.stdout
    (done,) = [f for f in (out / "tiny").iterdir() if (f / CELL_DONE).exists()]
    assert json.loads((done / CELL_DONE).read_text())["params"]["model.lr"] == 0.01
    metrics = json.loads((done / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert (done / "run" / "wandb").is_dir() and "--run.group=tiny" in (
        done / "log.txt"
    ).read_text()
    (failed,) = [f for f in (out / "tiny").iterdir() if (f / CELL_FAILED).exists()]
    record = json.loads((failed / CELL_FAILED).read_text())
    assert record["params"]["model.lr"] == 1.0e4 and record["returncode"] == 1
    assert "diverged" in Path(record["log"]).read_text()
    assert not (failed / CELL_DONE).exists()

    second = run_sweep(path, out, "--workers", "2", f"--data.root={data_root}")
    assert "0 done, 1 skipped (done before), 1 failed" in second.stdout
    assert "start " + failed.name in second.stdout and "start " + done.name not in second.stdout


def test_ctrl_c_stops_the_cells_and_records_nothing_as_done(tmp_path, data_root):
    # No stop_loss: the cells must still be training when the runner is interrupted.
    endless = {"trainer.max_steps": {"value": 10**7}, "model.stop_loss": {"value": None}}
    path = write_sweep(tmp_path, {**TINY, **endless})
    out = tmp_path / "out"
    # As after an in-process run (a notebook, test_cli): the launcher's W&B service is
    # advertised, and the cells must not attach to it.
    env = {**os.environ, "WANDB_SERVICE": "2-99999-tcp-localhost-1"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "identity_crisis.cli", "sweep", str(path), "--out", str(out)]
        + ["--workers", "2", f"--data.root={data_root}"],
        env=env,
        preexec_fn=default_sigint,  # the runner, too, must see the Ctrl-C sent below
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    deadline = time.time() + 120
    logs = []
    while time.time() < deadline:
        logs = list(out.glob("tiny/*/log.txt"))
        if len(logs) == 2 and all(
            "run tiny" in p.read_text() or "run cnn" in p.read_text() for p in logs
        ):
            break
        time.sleep(0.5)
    time.sleep(2)
    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 130  # 128 + SIGINT
    assert "0 done" in output and "2 interrupted" in output
    for cell in (out / "tiny").glob("*"):
        assert not (cell / CELL_DONE).exists()
        assert "interrupted" in json.loads((cell / CELL_FAILED).read_text())["reason"]


def test_a_sweep_naming_a_missing_config_is_refused_before_starting(tmp_path):
    path = write_sweep(tmp_path, {"model.depth": {"value": 1}, "seed_everything": {"value": 0}})
    spec = yaml.safe_load(path.read_text())
    spec["command"][5] = "configs/nope.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_sweep(path, tmp_path / "out")
    assert result.returncode == 2 and "configs/nope.yaml" in result.stderr
    assert not (tmp_path / "out").exists()


def test_runner_slots_pin_gpus_or_one_thread_per_cpu_worker(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {"model.depth": {"values": [1, 2, 3]}}))
    gpu = OfflineRunner(sweep, tmp_path, gpus=["0", "1"], per_gpu=2)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in gpu.slots] == ["0", "0", "1", "1"]
    cpu = OfflineRunner(sweep, tmp_path, workers=3, limit=2)
    assert len(cpu.slots) == 3 and all(s["OMP_NUM_THREADS"] == "1" for s in cpu.slots)
    todo, done = cpu.plan()
    assert len(todo) == 2 and not done


def test_agents_script_pins_agents_per_gpu(tmp_path):
    env = {**os.environ, "AGENT_DRY_RUN": "1", "AGENT_STAGGER_S": "0"}
    env |= {"CUDA_VISIBLE_DEVICES": "0,1", "WANDB_MODE": "", "AGENT_LOG_DIR": str(tmp_path)}
    result = subprocess.run(
        ["bash", "sweeps/agents.sh", "ent/proj/abc", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "wandb agent ent/proj/abc" in line]
    pinned = [line.split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for line in lines]
    assert pinned == ["0", "0", "1", "1"]


@pytest.mark.parametrize("script", ["sweeps/agents.sh", "sweeps/slurm_agents.sbatch"])
def test_launchers_refuse_a_missing_sweep_id(script):
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_ID"}
    result = subprocess.run(["bash", script], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 2 and "usage:" in result.stderr
