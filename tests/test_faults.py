"""Faults, in one table: a full disk, a killed `--run.replace`, a repeated `test`, a padded
WANDB_MODE, a stopped sweep cell. Each case says what must hold afterwards: nothing finished is
lost, nothing half-written or temporary is left, and the user gets one line.

The full-disk cases run on a 2 MB tmpfs the test mounts (root only); elsewhere they are skipped
with the reason.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from identity_crisis import run_folder
from identity_crisis.commands import main

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--config",
    str(REPO / "configs/cnn.yaml"),
    "--model.depth=2",
    "--model.channels=4",
    "--trainer.min_steps=0",
    "--trainer.max_steps=5",
    "--data.test_size=4",
]


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def fit(capsys, data_root, runs, *extra) -> tuple[int, str, str]:
    return run(capsys, "fit", *TINY, f"--data.root={data_root}", f"--run.root={runs}", *extra)


def only_run_folder(runs: Path) -> Path:
    (folder,) = [p.parent for p in runs.rglob(run_folder.METRICS) if "wandb" not in p.parts]
    return folder


def debris(root: Path) -> list[Path]:
    """Temporary files and empty run folders a fault may leave."""
    left = [p for p in root.rglob("*.tmp")] + [p for p in root.rglob(".idc-write-check-*")]
    left += [p for p in root.rglob("*") if p.is_dir() and not any(p.iterdir())]
    return [p for p in left if "wandb" not in p.parts]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, and fill(free_bytes) that leaves about that much of it free."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the full-disk cases needs root")
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command here for the full-disk cases")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")

    def fill(free: int) -> None:
        filler = disk / "filler"
        with open(filler, "ab", buffering=0) as file:  # unbuffered: close has nothing to flush
            try:
                while True:
                    file.write(b"\0" * 4096)
            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - free))

    yield SimpleNamespace(path=disk, fill=fill)
    subprocess.run(["umount", "-l", str(disk)], check=False)


def check_full_disk_before_work(capsys, data_root, small_disk):
    small_disk.fill(0)
    code, out, err = fit(capsys, data_root, small_disk.path / "runs")
    assert code == 2, err
    assert "no space left on the device writing" in err and "Traceback" not in err + out
    assert not debris(small_disk.path)
    assert not list(small_disk.path.rglob(run_folder.METRICS))


def check_full_disk_mid_run(capsys, data_root, small_disk, wandb=False):
    # Enough for the lock and the config, not for the weights, panels and W&B files.
    small_disk.fill(24 * 1024)
    logger = [] if wandb else ["--trainer.logger=false"]
    code, out, err = fit(capsys, data_root, small_disk.path / "runs", *logger)
    assert code == 1, err
    assert "Traceback" not in err + out
    assert "no space left on the device writing" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert not debris(small_disk.path)
    (metrics,) = small_disk.path.rglob(run_folder.METRICS)  # recorded failed, with why
    record = json.loads(metrics.read_text())
    assert record["status"] == run_folder.FAILED and "no space left" in record["error"]
    assert not list(small_disk.path.rglob(run_folder.RESERVE))


def check_full_disk_mid_run_with_wandb(capsys, data_root, small_disk):
    check_full_disk_mid_run(capsys, data_root, small_disk, wandb=True)


def check_full_disk_keeps_the_replaced_run(capsys, data_root, small_disk):
    runs = small_disk.path / "runs"
    assert fit(capsys, data_root, runs, "--trainer.logger=false")[0] == 0
    folder = only_run_folder(runs)
    before = (folder / run_folder.METRICS).read_text()
    small_disk.fill(8 * 1024)
    code, _, err = fit(capsys, data_root, runs, "--trainer.logger=false", "--run.replace=true")
    assert code in (1, 2) and "no space left" in err
    code, _, err = fit(capsys, data_root, runs, "--trainer.logger=false")
    assert code == 2 and "already holds a finished run" in err
    assert (folder / run_folder.METRICS).read_text() == before
    assert not debris(small_disk.path)


def check_full_disk_report(capsys, data_root, small_disk, tmp_path):
    runs = tmp_path / "runs"
    assert fit(capsys, data_root, runs, "--trainer.logger=false")[0] == 0
    small_disk.fill(0)
    code, out, err = run(capsys, "report", str(runs), "--out", str(small_disk.path / "report"))
    assert code in (1, 2), err
    assert "no space left on the device" in err and "Traceback" not in err + out
    assert not debris(small_disk.path)


def check_full_disk_sweep(capsys, data_root, small_disk, monkeypatch):
    monkeypatch.chdir(REPO)  # the sweep file names its program from the project root
    monkeypatch.setenv("IDC_DATA_DIR", str(data_root))
    small_disk.fill(0)
    sweep = [str(REPO / "sweeps/fig3_cnn_depth.yaml"), "--out", str(small_disk.path / "sweeps")]
    code, out, err = run(capsys, "sweep", *sweep, "--limit=1", "--workers=1")
    assert code == 1, err
    assert "no space left on the device writing" in err and "Traceback" not in err + out
    assert not debris(small_disk.path)


def check_killed_replace_keeps_the_old_run(capsys, data_root, tmp_path):
    runs = tmp_path / "runs"
    assert fit(capsys, data_root, runs, "--trainer.logger=false")[0] == 0
    folder = only_run_folder(runs)
    before = (folder / run_folder.METRICS).read_text()
    argv = [*TINY, f"--data.root={data_root}", f"--run.root={runs}", "--trainer.logger=false"]
    argv += ["--run.replace=true", "--trainer.max_steps=1000000", "--trainer.min_steps=1000000"]
    argv += ["--model.stop_loss=null"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "identity_crisis.commands", "fit", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (folder / run_folder.LOCK).exists() and time.monotonic() < deadline:
            assert proc.poll() is None, "the replace ended before it could be killed"
            time.sleep(0.2)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    code, _, err = fit(capsys, data_root, runs, "--trainer.logger=false")
    assert code == 2 and "already holds a finished run" in err
    assert (folder / run_folder.METRICS).read_text() == before
    assert not run_folder.previous_path(folder).exists()


def check_repeated_test_is_refused(capsys, data_root, tmp_path):
    runs = tmp_path / "runs"
    assert fit(capsys, data_root, runs, "--trainer.logger=false")[0] == 0
    ckpt = only_run_folder(runs) / run_folder.WEIGHTS
    test = ["test", *TINY, f"--data.root={data_root}", f"--ckpt_path={ckpt}"]
    test += ["--trainer.logger=false"]
    assert run(capsys, *test)[0] == 0
    (probe,) = [p for p in runs.rglob("*-test-*") if p.is_dir()]
    before = (probe / run_folder.METRICS).read_text()
    code, _, err = run(capsys, *test)
    assert code == 2 and "a re-probe of this checkpoint" in err and "to probe again" in err
    assert (probe / run_folder.METRICS).read_text() == before


def check_padded_wandb_mode(capsys, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", " offline ")
    runs = tmp_path / "runs"
    code, out, err = fit(capsys, data_root, runs)
    assert code == 0, err
    assert not list(runs.rglob(run_folder.LOCK))


def check_sweep_summary_keeps_interrupted_apart(capsys, tmp_path):
    from identity_crisis.sweep import OfflineRunner
    from identity_crisis.sweep_file import load_sweep

    runner = OfflineRunner(load_sweep(REPO / "sweeps/fig3_cnn_depth.yaml"), tmp_path, workers=1)
    stopped, broken = runner.cells[:2]
    run_folder.write_cell_failed(stopped.folder, stopped.params, -15, "interrupted (SIGTERM)")
    run_folder.write_cell_failed(broken.folder, broken.params, 1, "exit code 1")
    counts = {"done": 0, "skipped": 0, "failed": 1, "interrupted": 1, "others": 0, "left": 0}
    runner._summary(counts, [])
    out = capsys.readouterr().out
    assert f"interrupted: {stopped.folder.name}" in out
    assert f"failed: {broken.folder.name}" in out
    assert f"failed: {stopped.folder.name}" not in out


FAULTS = {
    "full-disk-before-any-work": check_full_disk_before_work,
    "full-disk-mid-run": check_full_disk_mid_run,
    "full-disk-mid-run-with-wandb": check_full_disk_mid_run_with_wandb,
    "full-disk-during-a-replace": check_full_disk_keeps_the_replaced_run,
    "full-disk-report": check_full_disk_report,
    "full-disk-sweep": check_full_disk_sweep,
    "killed-replace": check_killed_replace_keeps_the_old_run,
    "repeated-test": check_repeated_test_is_refused,
    "wandb-mode-with-spaces": check_padded_wandb_mode,
    "sweep-summary-interrupted-vs-failed": check_sweep_summary_keeps_interrupted_apart,
}


@pytest.mark.parametrize("case", FAULTS)
def test_a_fault_loses_nothing_and_leaves_nothing(case, request):
    check = FAULTS[case]
    names = inspect.signature(check).parameters
    names = [name for name, p in names.items() if p.default is inspect.Parameter.empty]
    check(*(request.getfixturevalue(name) for name in names))
