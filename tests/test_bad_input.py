"""Every bad value a new user can type, in one table: each is refused with exit 2 and one line
that names the value given and what would be valid, nothing is left behind, and nothing hangs.

Placeholders: {data} the data root, {tmp} the test's folder (files made by `make_inputs`),
{runs} the run root, {ckpt} the weights of a tiny trained depth-2 CNN.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from identity_crisis.commands import main

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--config",
    str(REPO / "configs/cnn.yaml"),
    "--data.root={data}",
    "--model.depth=2",
    "--model.channels=4",
    "--trainer.min_steps=0",
    "--trainer.max_steps=5",
    "--data.test_size=4",
    "--run.root={runs}",
]
TEST = ["test", *TINY, "--ckpt_path={ckpt}"]
SWEEP = str(REPO / "sweeps/fig3_cnn_depth.yaml")

# (id, command line, a piece of the expected one-line message)
BAD_INPUTS = [
    # tracebacks before
    ("seed-negative", ["fit", *TINY, "--seed_everything=-1"], "--seed_everything=-1 is not valid"),
    ("seed-float", ["fit", *TINY, "--seed_everything=1e20"], "--seed_everything=1e20 is not vali"),
    (
        "seed-too-big",
        ["fit", *TINY, "--seed_everything=99999999999"],
        "it must be an integer from 0 to 4294967295",
    ),
    ("ckpt-random", [*TEST[:-1], "--ckpt_path={tmp}/random.ckpt"], "cannot be read as a checkp"),
    ("ckpt-empty", [*TEST[:-1], "--ckpt_path={tmp}/empty.ckpt"], "cannot be read as a checkpoint"),
    ("ckpt-truncated", [*TEST[:-1], "--ckpt_path={tmp}/cut.ckpt"], "cannot be read as a checkpo"),
    ("ckpt-yaml", [*TEST[:-1], "--ckpt_path={tmp}/config.ckpt"], "cannot be read as a checkpoint"),
    ("ckpt-folder", [*TEST[:-1], "--ckpt_path={tmp}"], "is not a file; give a run's weights.ckpt"),
    (
        "ckpt-deeper-config",
        [*TEST, "--model.depth=3"],
        "was trained with model.depth=2, but the config gives model.depth=3",
    ),
    (
        "ckpt-other-family",
        [*TEST, "--config", str(REPO / "configs/fcn.yaml")],
        "holds a CNN, but the config's model is FCN",
    ),
    (
        "idx-truncated",
        ["fit", *TINY, "--data.root={tmp}/cut-idx"],
        "holds a corrupt or truncated MNIST IDX file",
    ),
    ("theory-kernel-1001", ["theory", "--kernels", "1001"], "kernel size 1001 is not valid"),
    ("theory-kernels-empty", ["theory", "--kernels", ""], "--kernels='' is not valid"),
    ("theory-seed", ["theory", "--seed_everything=-3"], "--seed_everything=-3 is not valid"),
    (
        "theory-test-size",
        ["theory", "--data.test_size=100000000000"],
        "--data.test_size=100000000000 is too large",
    ),
    ("init-signal-even-kernel", ["init-signal", "--model.kernel_size", "4"], "kernel_size=4 is n"),
    ("init-signal-negative-kernel", ["init-signal", "--model.kernel_size", "-3"], "size=-3 is not"),
    (
        "init-signal-no-channels",
        ["init-signal", "--model.channels", "0"],
        "channels=0 is not valid",
    ),
    (
        "init-signal-1e9-channels",
        ["init-signal", "--model.channels", "1000000000"],
        "too large to build",
    ),
    ("init-signal-no-depths", ["init-signal", "--depths", "[]"], "--depths is empty"),
    ("init-signal-depths-comma", ["init-signal", "--depths", "5,20"], "--depths=5,20 is not"),
    ("init-signal-missing-data", ["init-signal", "--data.root", "{tmp}/nothing"], "MNIST is not"),
    ("sweep-out-file", ["sweep", SWEEP, "--out", "{tmp}/random.ckpt"], "cannot be written"),
    ("sweep-out-read-only", ["sweep", SWEEP, "--out", "/proc/sweeps"], "cannot be written"),
    # a hang before
    (
        "test-size-huge",
        ["fit", *TINY, "--data.test_size=100000000"],
        "--data.test_size=100000000 is too large: 7 test sets",
    ),
    # accepted silently before
    ("test-sets-empty", ["fit", *TINY, "--data.test_sets=[]"], "--data.test_sets=[] is not valid"),
    ("run-name-escapes", ["fit", *TINY, "--run.name=../../escape"], "--run.name='../../escape'"),
    ("run-name-empty", ["fit", *TINY, "--run.name="], "--run.name='' is not valid"),
    ("run-group-dotdot", ["fit", *TINY, "--run.group=.."], "--run.group='..' is not valid"),
    ("run-root-empty", ["fit", *TINY, "--run.root="], "--run.root='' is not valid"),
    ("report-out-empty", ["report", "{runs}", "--out="], "--out='' is not valid"),
    ("report-a-file", ["report", "{tmp}/random.ckpt"], "random.ckpt is not a folder"),
    ("report-missing", ["report", "{tmp}/nowhere"], "nowhere does not exist"),
    # misleading before
    (
        "key-given-twice",
        ["fit", *TINY, "--data.test_size=abc", "--data.test_size=xyz"],
        "--data.test_size=xyz is not valid; expected a PositiveInt",
    ),
    (
        "sweep-override-not-the-file",
        ["sweep", SWEEP, "--out", "{tmp}/sweeps", "--data.test_size=abc"],
        "--data.test_size=abc is not valid",
    ),
    (
        "model-option-without-config",
        ["fit", "--model.depth=3", "--data.root={data}", "--run.root={runs}"],
        "--model.depth needs a model family, and none was chosen",
    ),
    ("sweep-a-folder", ["sweep", "{tmp}"], "is a folder; give a sweep YAML file in it"),
]


@pytest.fixture(scope="module")
def trained_ckpt(data_root, tmp_path_factory) -> Path:
    """The weights of a tiny trained run, for `test`."""
    runs = tmp_path_factory.mktemp("trained")
    args = [a.format(data=data_root, runs=runs) for a in TINY]
    try:
        main(["fit", *args, "--trainer.logger=false"])
    except SystemExit as exit:
        assert exit.code in (0, None)
    (ckpt,) = runs.rglob("weights.ckpt")
    return ckpt


def make_inputs(tmp: Path, data_root: Path, ckpt: Path) -> None:
    (tmp / "random.ckpt").write_bytes(bytes(range(256)) * 12)
    (tmp / "empty.ckpt").write_bytes(b"")
    (tmp / "cut.ckpt").write_bytes(ckpt.read_bytes()[:2000])
    shutil.copy(REPO / "configs/cnn.yaml", tmp / "config.ckpt")
    # A data root of uncompressed IDX files, one cut short.
    for folder in ("MNIST", "FashionMNIST"):
        raw = tmp / "cut-idx" / folder / "raw"
        raw.mkdir(parents=True)
        for archive in (data_root / folder / "raw").iterdir():
            name = archive.name.removesuffix(".gz")
            data = (
                gzip.decompress(archive.read_bytes())
                if archive.name.endswith(".gz")
                else archive.read_bytes()
            )
            if name.startswith("train-images") and folder == "MNIST":
                data = data[:100000]
            (raw / name).write_bytes(data)


@pytest.mark.parametrize(
    "args, needle", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_a_bad_input_is_one_line_and_exit_2(
    capsys, monkeypatch, tmp_path, data_root, trained_ckpt, args, needle
):
    make_inputs(tmp_path, data_root, trained_ckpt)
    runs = tmp_path / "runs"
    monkeypatch.chdir(REPO)  # sweep files name the program relative to the project root
    monkeypatch.setenv("IDC_DATA_DIR", str(data_root))
    fill = {"data": data_root, "tmp": tmp_path, "runs": runs, "ckpt": trained_ckpt}
    args = [a.format(**fill) for a in args]
    with pytest.raises(SystemExit) as exit:
        main(args)
    out, err = capsys.readouterr()
    assert exit.value.code == 2, err
    assert needle.format(**fill) in err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if not line.startswith("see: ")]
    assert len(lines) == 1, err
    assert not runs.exists() or not any(runs.rglob("metrics.json"))  # nothing ran


def test_a_user_error_in_the_environment_is_one_line(capsys, monkeypatch, tmp_path, data_root):
    """WANDB_MODE with spaces is what W&B means; a `.env` that is not UTF-8 is one line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"WANDB_MODE=\xff\xfe offline\n")
    with pytest.raises(SystemExit) as exit:
        main(["theory", "--kernels", "1"])
    err = capsys.readouterr().err
    assert exit.value.code == 2
    assert ".env cannot be read" in err and "UTF-8" in err
    assert len(err.strip().splitlines()) == 1
