"""scripts/gpu_check.sh: its dry mode parses every step's real command line, so a GPU session
is not spent finding a typo; and it fails, naming the step, when a command does not parse."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
STEPS = ("fit", "bench", "sweep")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the check is a bash script")


def run_check(tmp_path, *args, script=SCRIPT, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, **env}
    for name in ("GPU_CHECK_DRY", "GPU_CHECK_STEPS"):
        if name not in env:
            environment.pop(name, None)
    for step in STEPS:
        if f"GPU_CHECK_{step.upper()}_ARGS" not in env:
            environment.pop(f"GPU_CHECK_{step.upper()}_ARGS", None)
    return subprocess.run(
        ["bash", str(script), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )


def rows(stdout: str) -> dict[str, list[str]]:
    """The summary table: step -> [status, rc, seconds, result]."""
    table = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] not in ("step", "---"):
            table[cells[0]] = cells[1:]
    return table


def test_dry_run_parses_every_step_and_writes_nothing(tmp_path):
    done = run_check(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    assert list(table) == ["device", *STEPS], done.stdout
    assert all(row[:2] == ["ok", "0"] for row in table.values()), done.stdout
    assert re.match(r"\d+ cells: ", table["sweep"][3]), table["sweep"]
    # The real commands were checked: the fit's GPU options, the benchmark's, the sweep's packing.
    assert "--trainer.accelerator=gpu --trainer.devices=1" in done.stdout
    assert "benchmarks/bench_speed.py --quick --device cuda" in done.stdout
    assert "--per-gpu 4" in done.stdout and "--trainer.max_steps=200" in done.stdout
    assert not (tmp_path / "out").exists(), "a dry run trained or wrote something"


def test_a_bad_option_fails_the_dry_run_of_its_step(tmp_path):
    bad = {f"GPU_CHECK_{step.upper()}_ARGS": "--trainer.no_such_option=1" for step in STEPS}
    bad["GPU_CHECK_BENCH_ARGS"] = "--no-such-flag"
    done = run_check(tmp_path, GPU_CHECK_DRY="1", GPU_CHECK_STEPS=" ".join(STEPS), **bad)
    assert done.returncode == 1, done.stdout + done.stderr
    table = rows(done.stdout)
    for step in STEPS:
        status, rc, _, result = table[step]
        assert status == "FAIL" and rc == "2", (step, table[step])
        assert "no_such_option" in result or "no-such-flag" in result, (step, result)


def test_a_typo_in_the_script_itself_fails_the_dry_run(tmp_path):
    """A copy of the script whose own sweep options have a typo: dry mode catches what a
    GPU session would otherwise find first."""
    copy = tmp_path / "repo"
    for name in ("identity_crisis", "configs", "sweeps", "benchmarks"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).symlink_to(REPO / name)
    (copy / "scripts").mkdir()
    text = SCRIPT.read_text()
    assert "--per-gpu 4" in text
    (copy / "scripts" / "gpu_check.sh").write_text(text.replace("--per-gpu 4", "--per-gpux 4"))
    done = run_check(
        tmp_path, "--dry-run", script=copy / "scripts" / "gpu_check.sh", GPU_CHECK_STEPS="sweep"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    status, rc, _, result = rows(done.stdout)["sweep"]
    assert (status, rc) == ("FAIL", "2") and "--per-gpux" in result


def test_without_a_gpu_the_real_check_stops_at_once_and_says_so(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real check would train")
    done = run_check(tmp_path)
    assert done.returncode == 1
    assert "torch sees no GPU" in done.stderr
    summary = (tmp_path / "out" / "gpu_check_summary.md").read_text()
    assert list(rows(summary)) == ["device"] and rows(summary)["device"][0] == "FAIL"
    again = run_check(tmp_path)  # an OUT that holds a check is never written over
    assert again.returncode == 2 and "already holds an earlier check" in again.stderr


def test_the_script_says_how_to_run_it():
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for words in ("--dry-run", "GPU_CHECK_DRY", "OUT", "IDC_DATA_DIR", "8 minutes"):
        assert words in done.stdout
    assert subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True).returncode == 2
