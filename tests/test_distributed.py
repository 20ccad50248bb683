"""Data-parallel training (Lightning DDP) inside one run, on two CPU processes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_output import OWN_LINES

REPO = Path(__file__).resolve().parent.parent


def fit(run_dir: Path, data_root: Path, *extra: str, printed: list | None = None) -> dict:
    """metrics.json of a small FCN run; `printed` receives the run's stdout and stderr lines."""
    args = [sys.executable, "-m", "identity_crisis.cli", "fit", "--config", "configs/fcn.yaml"]
    args += ["--model.depth=2", "--model.width=32", "--model.lr=0.001", "--trainer.max_steps=10"]
    # 7 test images: an uneven split over 2 processes, which must still count each image once.
    args += ["--data.num_train=4", "--data.test_size=7", "--data.test_sets=[mnist,patterns]"]
    args += ["--trainer.accelerator=cpu", f"--data.root={data_root}", "--data.download=false"]
    args += [f"--run.dir={run_dir}", *extra]
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_SHOW_INFO", None)
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    if printed is not None:
        printed += (result.stdout + result.stderr).strip().splitlines()
    return json.loads((run_dir / "metrics.json").read_text())


def test_ddp_spawn_trains_like_the_full_batch_and_logs_one_wandb_run(tmp_path, data_root):
    single = fit(tmp_path / "single", data_root)
    printed = []
    ddp = fit(
        tmp_path / "ddp",
        data_root,
        "--trainer.devices=2",
        "--trainer.strategy=ddp_spawn",
        printed=printed,
    )
    # Each process takes half the images; the averaged gradient is the full-batch gradient.
    assert ddp["train/final_loss"] == pytest.approx(single["train/final_loss"], rel=1e-3)
    assert ddp["train/steps"] == single["train/steps"] == 10
    assert ddp["metrics"].keys() == single["metrics"].keys()
    for key, value in single["metrics"].items():
        # Shares of 7 images differ by 1/7 if an image is dropped or counted twice.
        assert ddp["metrics"][key] == pytest.approx(value, abs=1e-3), key
    # What a 2-process run prints is the one-process run's: no banner or warning of any rank.
    foreign = [line for line in printed if not OWN_LINES.match(line)]
    assert foreign == []
    assert [line.split()[0] for line in printed if re.match(r"^\w+ +-?\d\.\d{3} ", line)] == [
        "mnist",
        "patterns",
    ]
    assert ddp["train/final_loss"] != pytest.approx(
        fit(tmp_path / "other", data_root, "--model.lr=0.01")["train/final_loss"], rel=1e-2
    )
    assert len(list((tmp_path / "ddp" / "wandb").glob("offline-run-*"))) == 1
    assert (tmp_path / "ddp" / "probe_panel.png").exists()


def test_ddp_spawn_takes_the_same_minibatches_as_one_process(tmp_path, data_root):
    minibatches = ("--data.num_train=8", "--data.train_batch_size=2")
    single = fit(tmp_path / "single", data_root, *minibatches)
    ddp = fit(
        tmp_path / "ddp",
        data_root,
        *minibatches,
        "--trainer.devices=2",
        "--trainer.strategy=ddp_spawn",
    )
    # Both ranks draw one permutation and take one image of each minibatch: the averaged gradient
    # is the one-process minibatch gradient; the final loss is over all 8 images in both.
    assert ddp["train/final_loss"] == pytest.approx(single["train/final_loss"], rel=1e-3)
    full = fit(tmp_path / "full", data_root, "--data.num_train=8")
    assert single["train/final_loss"] != pytest.approx(full["train/final_loss"], rel=1e-3)


@pytest.mark.parametrize(
    "data, refused",
    [
        (["--data.num_train=3"], "--data.num_train=3 cannot be split evenly over 2"),
        (
            ["--data.num_train=4", "--data.train_batch_size=3"],
            "--data.train_batch_size=3 cannot be split evenly over 2",
        ),
        (
            ["--data.num_train=4", "--data.test_size=1"],
            "test set mnist has 1 images, fewer than the 2 processes",
        ),
    ],
)
def test_an_uneven_split_over_processes_is_refused(tmp_path, data_root, data, refused):
    args = [sys.executable, "-m", "identity_crisis.cli", "fit", "--config", "configs/fcn.yaml"]
    args += [*data, "--trainer.devices=2", "--trainer.strategy=ddp_spawn"]
    args += ["--trainer.accelerator=cpu", f"--data.root={data_root}", f"--run.dir={tmp_path}/r"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert refused in result.stderr
