"""What a run gives W&B and the other loggers, read back the way a dashboard would get it: the
offline run's `.wandb` record (tests/wandb_records.py), a CSVLogger's file, and every W&B mode.

The contract, for `fit`, a sweep cell and a re-probe (`test`) alike:
- config values keep their YAML types (a dashboard sorts and plots depth as a number);
- the run's group, job type and tags;
- every `test/<set>/<score>` of metrics.json in the summary, with the panels and the probe table;
- one step axis: training and test logged against optimizer steps (`trainer/global_step`).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from identity_crisis import run_folder
from identity_crisis.cli import main
from tests.wandb_records import UnknownFormat, check_format, read_run, wandb_file

REPO = Path(__file__).resolve().parent.parent
STEPS = 120  # not a multiple of log_every_n_steps (50): the last training log and test differ
TINY = [
    "--config",
    str(REPO / "configs" / "cnn.yaml"),  # absolute: one test runs from another folder
    "--model.depth=2",
    "--model.channels=4",
    "--trainer.min_steps=0",
    f"--trainer.max_steps={STEPS}",
    "--data.test_size=4",
    "--data.test_sets=[mnist,patterns]",
]
PANELS = ("panels/probe_panel", "panels/hidden_trained", "panels/hidden_init")


def run_cli(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code in (0, None), f"exit {exit.code}"


@pytest.fixture(scope="module")
def fitted(data_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("wandb-record") / "fit"
    run_cli(["fit", *TINY, f"--data.root={data_root}", f"--run.dir={run_dir}"])
    return run_dir


def assert_contract(run_dir: Path, job_type: str, steps: int = STEPS):
    """The record of `run_dir` keeps the contract above; returns it."""
    metrics = run_folder.read_metrics(run_dir)
    assert metrics["status"] == "ok" and metrics["train/steps"] == steps
    run = read_run(wandb_file(run_dir))
    config = run.config
    typed = {
        "model.depth": int,
        "model.channels": int,
        "model.lr": float,
        "model.stop_loss": float,
        "model.bias": bool,
        "seed_everything": int,
        "data.test_size": int,
        "data.test_sets": list,
    }
    for key, kind in typed.items():
        assert type(config[key]) is kind, (key, config[key])
    assert config["model.depth"] == 2 and config["data.test_sets"] == ["mnist", "patterns"]
    assert run.job_type == job_type and run.group and run.name
    assert run.exit_code == 0
    for key, value in metrics["metrics"].items():
        assert run.summary[key] == pytest.approx(value, abs=1e-7), key
    # Media sit in the summary as their parts: panels/probe_panel/_type = image-file, ...
    kinds = {key.rsplit("/", 1)[0]: v for key, v in run.summary.items() if key.endswith("/_type")}
    assert kinds == {**dict.fromkeys(PANELS, "images/separated"), "probe/scores": "table-file"}
    # One step axis: every logged row carries the optimizer step; the test scores, panels and
    # table sit at the last training step, the training loss at its own steps before it.
    rows = [row for row in run.history if not set(row) <= {"_runtime", "_timestamp", "_step"}]
    assert all("trainer/global_step" in row for row in rows)
    late = [row for row in rows if any(k.startswith(("test/", "panels/", "probe/")) for k in row)]
    assert late and {row["trainer/global_step"] for row in late} == {steps}
    loss_steps = [row["trainer/global_step"] for row in rows if "train/loss" in row]
    assert loss_steps == list(range(50, steps + 1, 50))[: len(loss_steps)]
    return run


def test_a_fit_keeps_the_contract(fitted):
    run = assert_contract(fitted, "fit")
    assert run.name.startswith("cnn-relu-d2-c4") and run.name.endswith("-s0")
    assert run.group == run.name.removesuffix("-s0") and run.tags == []


def test_a_re_probe_keeps_it_and_shows_the_folders_images(fitted, data_root, tmp_path, capsys):
    images = tmp_path / "mine"
    images.mkdir()
    for name, value in (("a_dark", 20), ("b_light", 230)):
        Image.fromarray(np.full((28, 28), value, np.uint8)).save(images / f"{name}.png")
    run_cli(
        [
            "test",
            *TINY,
            f"--data.root={data_root}",
            f"--ckpt_path={fitted / run_folder.WEIGHTS}",
            f"--data.image_folder={images}",
            "--data.test_sets=[mnist,patterns,folder]",
        ]
    )
    printed = capsys.readouterr().out
    assert "DataLoader" not in printed  # Lightning's own wide table stays hidden, as in fit
    (probe,) = fitted.parent.glob("fit-test-*")
    run = read_run(wandb_file(probe))
    assert run.job_type == "test" and run.name.endswith("-test")
    # The net's own step count travels with its weights: a re-probe sits where training ended.
    late = [row for row in run.history if any(k.startswith("test/") for k in row)]
    assert {row["trainer/global_step"] for row in late} == {STEPS}
    assert "test/folder/identity_corr" in run.summary
    predictions = run_folder.read_predictions(probe / run_folder.PROBE_PREDICTIONS)
    assert list(predictions["names"]) == ["train", "a_dark", "b_light"]


def test_a_sweep_cell_keeps_it_and_carries_its_sweep(data_root, tmp_path):
    spec = {
        "name": "tiny",
        "program": "identity_crisis/cli.py",
        "method": "grid",
        "command": ["${env}", "${interpreter}", "${program}", "fit", *TINY[:2], "${args}"],
        "parameters": {"model.depth": {"values": [2]}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    others = [arg for arg in TINY[2:] if not arg.startswith("--model.depth")]
    command = [sys.executable, "-m", "identity_crisis.cli", "sweep", str(path)]
    command += ["--out", str(tmp_path / "out"), f"--data.root={data_root}", *others]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (done,) = (tmp_path / "out").rglob(run_folder.CELL_DONE)
    cell = done.parent
    run = assert_contract(cell / run_folder.CELL_RUN, "fit")
    assert "sweep:tiny" in run.tags and run.group == "tiny"


def test_a_csv_logger_gets_the_same_keys_on_the_same_steps(data_root, tmp_path):
    run_dir = tmp_path / "csv-run"
    run_cli(
        [
            "fit",
            *TINY,
            f"--data.root={data_root}",
            f"--run.dir={run_dir}",
            "--trainer.logger=CSVLogger",
            f"--trainer.logger.save_dir={tmp_path / 'csv'}",
        ]
    )
    metrics = run_folder.read_metrics(run_dir)
    assert metrics["status"] == "ok" and not (run_dir / "wandb").exists()
    (table,) = (tmp_path / "csv").rglob("metrics.csv")
    rows = list(csv.DictReader(table.open()))
    steps_of = {}
    for row in rows:
        for key, value in row.items():
            if value != "" and key != "step":
                steps_of.setdefault(key, set()).add(int(row["step"]))
    for key in metrics["metrics"]:
        assert steps_of[key] == {STEPS}, key
    assert steps_of["train/loss"] == {50, 100}
    assert steps_of["train/final_loss"] == {STEPS}


@pytest.mark.parametrize(
    "mode, args",
    [("disabled", []), ("offline", ["--trainer.logger=false"])],
    ids=["wandb-disabled", "logger-false"],
)
def test_without_a_wandb_run_a_fit_still_ends_ok_with_its_scores(
    mode, args, data_root, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", mode)
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # W&B's disabled run names a folder under the working directory
    run_cli(["fit", *TINY, f"--data.root={data_root}", f"--run.dir={run_dir}", *args])
    metrics = run_folder.read_metrics(run_dir)
    assert metrics["status"] == "ok" and metrics["train/steps"] == STEPS
    assert "test/mnist/identity_corr" in metrics["metrics"]
    assert (run_dir / run_folder.PROBE_PREDICTIONS).is_file()
    assert not list(tmp_path.rglob("*.wandb"))


def test_a_debugging_run_is_marked_and_a_real_run_takes_its_folder(data_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["fit", *TINY, f"--data.root={data_root}", f"--run.dir={run_dir}"]
    run_cli([*common, "--trainer.fast_dev_run=true"])
    debug = run_folder.read_metrics(run_dir)
    assert debug["status"] == "debug" and debug["debug"] == "trainer.fast_dev_run=True"
    run_cli(common)  # not refused as a finished run
    assert run_folder.read_metrics(run_dir)["status"] == "ok"


def test_the_reader_refuses_a_format_it_does_not_know(fitted, tmp_path):
    changed = tmp_path / "run-x.wandb"
    data = bytearray(wandb_file(fitted).read_bytes())
    data[4] ^= 0xFF  # the magic number
    changed.write_bytes(bytes(data))
    with pytest.raises(UnknownFormat, match="W&B changed its private record format"):
        check_format(changed)
