"""Data-parallel training (Lightning DDP) inside one run, on two CPU processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def fit(run_dir: Path, data_root: Path, *extra: str) -> dict:
    args = [sys.executable, "-m", "identity_crisis.cli", "fit", "--config", "configs/fcn.yaml"]
    args += ["--model.depth=2", "--model.width=32", "--model.lr=0.001", "--trainer.max_steps=10"]
    args += ["--data.num_train=4", "--data.test_size=8", "--data.test_sets=[mnist]"]
    args += ["--trainer.accelerator=cpu", f"--data.root={data_root}", "--data.download=false"]
    args += [f"--run.dir={run_dir}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def test_ddp_spawn_trains_like_the_full_batch_and_logs_one_wandb_run(tmp_path, data_root):
    single = fit(tmp_path / "single", data_root)
    ddp = fit(tmp_path / "ddp", data_root, "--trainer.devices=2", "--trainer.strategy=ddp_spawn")
    # Each process takes half the images; the averaged gradient is the full-batch gradient.
    assert ddp["train/final_loss"] == pytest.approx(single["train/final_loss"], rel=1e-3)
    for key in ("test/mnist/identity_corr", "test/mnist/constant_corr"):
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], abs=1e-3)
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
        (["--data.num_train=3"], "--data.num_train=3"),
        (["--data.num_train=4", "--data.train_batch_size=3"], "--data.train_batch_size=3"),
    ],
)
def test_an_uneven_split_over_processes_is_refused(tmp_path, data_root, data, refused):
    args = [sys.executable, "-m", "identity_crisis.cli", "fit", "--config", "configs/fcn.yaml"]
    args += [*data, "--trainer.devices=2", "--trainer.strategy=ddp_spawn"]
    args += ["--trainer.accelerator=cpu", f"--data.root={data_root}", f"--run.dir={tmp_path}/r"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert f"{refused} cannot be split evenly over 2" in result.stderr
