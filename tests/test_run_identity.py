"""Runs you can trust (issue 11): a run's folder follows from its whole config, a finished result
is never overwritten, one folder has one trainer, and the weights are kept and re-probed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from identity_crisis import run_folder
from identity_crisis.cli import main
from identity_crisis.locks import FolderLock
from tests.test_cli import run_cli as fit

REPO = Path(__file__).resolve().parent.parent
TINY = ["--config", "configs/cnn.yaml", "--model.depth=2", "--model.channels=4"]
TINY += ["--trainer.min_steps=0", "--data.test_size=8"]


def folder_of(out: str) -> Path:
    (line,) = [line for line in out.splitlines() if line.startswith("run folder: ")]
    return Path(line.removeprefix("run folder: "))


@pytest.fixture
def base(data_root, tmp_path):
    return [*TINY, f"--data.root={data_root}", f"--run.root={tmp_path / 'runs'}"]


def test_configs_that_differ_in_any_result_key_get_their_own_folders(capsys, base):
    folders = set()
    for extra in (["--trainer.max_steps=20"], ["--trainer.max_steps=30"], ["--data.test_size=4"]):
        code, out, err = fit(capsys, *base, "--trainer.max_steps=20", *extra)
        assert code == 0, err
        folders.add(folder_of(out))
    assert len(folders) == 3
    steps = {json.loads((f / "metrics.json").read_text())["train/steps"] for f in folders}
    assert steps == {20, 30}


def test_the_same_config_again_never_overwrites_the_first_result(capsys, base):
    code, out, _ = fit(capsys, *base, "--trainer.max_steps=20")
    first = folder_of(out)
    kept = (first / "metrics.json").read_bytes()
    code, out, err = fit(capsys, *base, "--trainer.max_steps=20")
    assert code == 2
    assert "already holds a finished run of this config" in err and "--run.replace=true" in err
    assert (first / "metrics.json").read_bytes() == kept
    assert len(list((first / "wandb").glob("offline-run-*"))) == 1  # no second W&B run in it
    code, out, err = fit(capsys, *base, "--trainer.max_steps=20", "--run.replace=true")
    assert code == 0 and folder_of(out) == first
    assert len(list((first / "wandb").glob("offline-run-*"))) == 1


def test_an_unfinished_run_is_trained_again_in_a_clean_folder(capsys, base):
    code, out, _ = fit(capsys, *base, "--trainer.max_steps=20")
    folder = folder_of(out)
    run_folder.write_failure(folder, run_folder.INTERRUPTED, "KeyboardInterrupt")
    code, out, err = fit(capsys, *base, "--trainer.max_steps=20")
    assert code == 0, err
    assert "held an earlier interrupted run: trained again" in out
    assert json.loads((folder / "metrics.json").read_text())["status"] == "ok"
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 1


def test_a_folder_locked_by_a_live_process_is_refused_and_a_dead_ones_lock_is_taken(capsys, base):
    code, out, _ = fit(capsys, *base, "--trainer.max_steps=20")
    folder = folder_of(out)
    run_folder.write_failure(folder, run_folder.CRASHED, "killed")
    # The lock's record, as another live process of this host would write it.
    lock = {**FolderLock(folder, run_folder.LOCK).record(), "pid": os.getppid()}
    lock["pid_start"] = None  # unknown start time: judged by the pid alone
    (folder / run_folder.LOCK).write_text(json.dumps(lock))
    code, out, err = fit(capsys, *base, "--trainer.max_steps=20")
    assert code == 2 and f"being trained now by pid {os.getppid()}" in err
    # The same pid with another start time is a newer process that reuses it: the lock is stale.
    lock["pid_start"] = "1"
    (folder / run_folder.LOCK).write_text(json.dumps(lock))
    code, out, err = fit(capsys, *base, "--trainer.max_steps=20", "--run.replace=true")
    assert code == 0, err
    assert not (folder / run_folder.LOCK).exists()
    run_folder.write_failure(folder, run_folder.CRASHED, "killed")
    lock["pid_start"] = None
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    lock["pid"] = int(dead.stdout)
    (folder / run_folder.LOCK).write_text(json.dumps(lock))
    code, out, err = fit(capsys, *base, "--trainer.max_steps=20")
    assert code == 0, err
    assert not (folder / run_folder.LOCK).exists()


def test_two_fits_of_different_configs_at_once_write_two_folders(data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "identity_crisis.cli", "fit", *TINY]
    command += [f"--data.root={data_root}", f"--run.root={tmp_path / 'runs'}"]
    procs = [
        subprocess.Popen(
            [*command, f"--trainer.max_steps={steps}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for steps in (40, 60)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = [folder_of(out) for out in outs]
    assert folders[0] != folders[1]
    for folder, steps in zip(folders, (40, 60), strict=True):
        assert json.loads((folder / "metrics.json").read_text())["train/steps"] == steps
        assert f"max_steps: {steps}" in (folder / "config.yaml").read_text()


def test_weights_are_kept_and_re_probed_beside_the_run_never_into_it(capsys, base, tmp_path):
    code, out, _ = fit(capsys, *base, "--trainer.max_steps=30")
    run = folder_of(out)
    assert (run / run_folder.WEIGHTS).is_file()
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    trained = json.loads((run / "metrics.json").read_text())["metrics"]
    try:
        main(
            [
                "test",
                "--config",
                str(run / "config.yaml"),
                "--ckpt_path",
                str(run / run_folder.WEIGHTS),
                "--data.test_sets=[mnist,patterns]",
            ]
        )
    except SystemExit as exit:
        assert exit.code in (0, None)
    out = capsys.readouterr().out
    probe = folder_of(out)
    assert probe.parent == run.parent and probe.name.startswith(f"{run.name}-test-")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    probed = json.loads((probe / "metrics.json").read_text())
    assert probed["status"] == "ok" and probed["fitted"] is False
    for key, value in probed["metrics"].items():
        assert value == pytest.approx(trained[key], abs=1e-6), key  # the same net, re-probed
    assert set(probed["metrics"]) == {
        k for k in trained if k.split("/")[1] in ("mnist", "patterns")
    }


def test_keep_weights_false_keeps_none(capsys, base):
    code, out, _ = fit(capsys, *base, "--trainer.max_steps=10", "--run.keep_weights=false")
    assert code == 0 and not (folder_of(out) / run_folder.WEIGHTS).exists()


def test_sigterm_records_interrupted_with_the_step_and_keeps_the_weights(data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "identity_crisis.cli", "fit", *TINY, "--model.stop_loss=null"]
    command += ["--trainer.max_steps=1000000", f"--data.root={data_root}"]
    command += [f"--run.root={tmp_path / 'runs'}"]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # Training has begun (Lightning's SIGTERM handler is set) once the progress line is out; on a
    # busy machine that can take many seconds after the W&B run exists.
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("training:"):
            break
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, out
    folder = folder_of(out)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["error"] == "interrupted by SIGTERM"
    assert metrics["train/steps"] > 0 and "metrics" not in metrics
    assert (folder / run_folder.WEIGHTS).is_file()
    assert not (folder / run_folder.LOCK).exists()
