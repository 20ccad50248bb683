"""The `identity-crisis fit` command end to end: run folder, panels, W&B offline run, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from identity_crisis.cli import main

SMALL = ["--model.depth=2", "--model.channels=4", "--trainer.max_steps=30", "--data.test_size=8"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        main(["fit", *args])
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_args(data_root, tmp_path):
    return [f"--data.root={data_root}", f"--run.root={tmp_path / 'runs'}", "--data.download=false"]


def test_fit_writes_the_run_folder_and_an_offline_wandb_run(capsys, cli_args):
    code, out, err = run_cli(capsys, "--config", "configs/cnn.yaml", *SMALL, *cli_args)
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("run folder: ")
    run_dir = Path(last.removeprefix("run folder: "))
    assert run_dir.parent.name == "cnn-relu-d2-c4-k5-default-amsgrad0.001wu10-mnist7"
    # The readable name, then a hash of every key that can change the result.
    readable, digest = run_dir.name.rsplit("-", 1)
    assert readable == "cnn-relu-d2-c4-k5-default-amsgrad0.001wu10-mnist7-s0"
    assert len(digest) == 8 and int(digest, 16) >= 0
    assert "wandb sync" in out

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["train/steps"] == 30
    assert metrics["model/params"] == 25 * 4 + 4 + 25 * 4 + 1
    assert metrics["data/train_indices"] == [15]
    # One hidden layer: its share of live units and of input-dependent variance (issue 16).
    assert len(metrics["layers"]["live_share"]) == len(metrics["layers"]["input_share"]) == 1
    assert 0 < metrics["layers"]["live_share"][0] <= 1
    assert "hidden layer" in out
    for name in ("mnist", "fashion", "mnist_pairs", "patterns", "gaussian_noise", "checkerboard"):
        for key in ("identity_corr", "constant_corr", "mse_identity", "frac_identity"):
            assert f"test/{name}/{key}" in metrics["metrics"]

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["init_args"]["depth"] == 2
    assert config["trainer"]["max_steps"] == 30

    predictions = np.load(run_dir / "probe_predictions.npz")
    assert predictions["inputs"].shape == predictions["outputs"].shape == (14, 1, 28, 28)
    assert list(predictions["names"][:2]) == ["train", "mnist_pair"]

    panel = np.asarray(Image.open(run_dir / "probe_panel.png").convert("RGB"))
    # Two rows of 3x cells, with a title above and the scores under them (tests/test_images.py).
    assert panel.shape[0] > 2 + 2 * (28 * 3 + 2)
    red = (panel[..., 0] > 200) & (panel[..., 1] < 60) & (panel[..., 2] < 80)
    assert red.any(axis=0).sum() >= 6  # the divider after the training image
    for name in ("hidden_trained.png", "hidden_init.png"):
        hidden = np.asarray(Image.open(run_dir / name).convert("RGB"))
        assert hidden.shape[0] > 2 + 3 * (28 * 3 + 2)  # the input, layer 1, the output, labels

    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("*.wandb"))
    images = list((offline_run / "files" / "media" / "images").rglob("*.png"))
    assert {p.name.split("_")[0] for p in images} >= {"probe", "hidden"}
    (table,) = (offline_run / "files" / "media" / "table" / "probe").glob("scores*.table.json")
    table = json.loads(table.read_text())
    assert [row[0] for row in table["data"]] == list(predictions["names"])
    assert table["data"][0][1] == pytest.approx(float(predictions["identity_corr"][0]), abs=1e-6)


# Bad values, table-driven: typed arguments are refused by the parser, the checks a type
# cannot state (an even kernel, a folder) by the model or the data; all in one line, exit 2.
BAD_INPUTS = [
    (
        ["--config", "configs/cnn.yaml", "--model.depth=0"],
        "--model.depth=0 is not valid; it must be > 0",
    ),
    (["--config", "configs/cnn.yaml", "--model.kernel_size=4"], "--model.kernel_size=4 is even"),
    (
        ["--config", "configs/cnn.yaml", "--model.channels=-2"],
        "--model.channels=-2 is not valid; it must be > 0",
    ),
    (
        ["--config", "configs/fcn.yaml", "--model.width=-5"],
        "--model.width=-5 is not valid; it must be > 0",
    ),
    (["--config", "configs/fcn.yaml", "--model.activation=tanh"], "choose one of relu, linear"),
    (
        ["--config", "configs/cnn.yaml", "--model.init=he"],
        "--model.init=he is not valid; choose one of default, default_zero_bias, xavier_uniform",
    ),
    (
        ["--config", "configs/cnn.yaml", "--model.optimizer=rmsprop"],
        "choose one of adam, amsgrad, sgd",
    ),
    (
        ["--config", "configs/cnn.yaml", "--model.lr=0.0"],
        "--model.lr=0.0 is not valid; it must be > 0",
    ),
    (
        ["--config", "configs/cnn.yaml", "--model.lr=inf"],
        "--model.lr=inf is not valid; it must be > 0 and < inf",
    ),
    (["--config", "configs/cnn.yaml", "--model.lr=abc"], "--model.lr=abc is not valid"),
    (
        ["--config", "configs/cnn.yaml", "--model.warmup_steps=-5"],
        "--model.warmup_steps=-5 is not valid; it must be >= 0",
    ),
    (
        ["--config", "configs/cnn.yaml", "--model.momentum=1"],
        "--model.momentum=1 is not valid; it must be >= 0 and < 1",
    ),
    (
        ["--config", "configs/cnn.yaml", "--model.verdict_threshold=0"],
        "--model.verdict_threshold=0 is not valid; it must be > 0",
    ),
    (
        ["--config", "configs/cnn.yaml", "--model.check_every=0"],
        "--model.check_every=0 is not valid; it must be > 0",
    ),
    (
        ["--config", "configs/cnn.yaml", "--model.bias=maybe"],
        "--model.bias=maybe is not valid; expected bool",
    ),
    (["--config", "configs/cnn.yaml", "--model.foo=1"], "--model.foo is not an option of CNN"),
    (["--config", "configs/cnn.yaml", "--trainer.max_stepz=1"], "--trainer.max_stepz"),
    (
        ["--config", "configs/cnn.yaml", "--seed_everything=abc"],
        "--seed_everything=abc is not valid",
    ),
    (
        ["--config", "configs/cnn.yaml", "--data.train_dataset=svhn"],
        "--data.train_dataset=svhn is not valid; choose one of mnist, fashion, cifar10",
    ),
    (["--config", "configs/cnn.yaml", "--data.train_split=val"], "choose one of train, test"),
    (
        ["--config", "configs/cnn.yaml", "--data.test_sets=[mnist,bogus]"],
        "--data.test_sets=bogus is not valid; choose one of mnist, fashion",
    ),
    (
        ["--config", "configs/cnn.yaml", "--data.num_train=0"],
        "--data.num_train=0 is not valid; it must be > 0",
    ),
    (
        ["--config", "configs/cnn.yaml", "--data.num_train_mode=all"],
        "choose one of first, per_class",
    ),
    (
        ["--config", "configs/cnn.yaml", "--data.test_size=0"],
        "--data.test_size=0 is not valid; it must be > 0",
    ),
    (
        ["--config", "configs/cnn.yaml", "--data.test_sizes={nope: 3}"],
        "'nope', which is not among the test sets",
    ),
    (["--config", "configs/cnn.yaml", "--data.test_sizes={mnist: 0}"], "it must be > 0"),
    (
        ["--config", "configs/cnn.yaml", "--data.train_index=-1"],
        "--data.train_index=-1 is not valid; it must be >= 0",
    ),
    (
        ["--config", "configs/cnn.yaml", "--data.batch_size=0"],
        "--data.batch_size=0 is not valid; it must be > 0",
    ),
    (["--config", "configs/cnn.yaml", "--data.image_folder=/no/such/dir"], "/no/such/dir"),
]


# Found only after a run folder and W&B run existed, or after training, before issue 11: each is
# now refused first. Paths under {tmp} are made by the test.
CHECKED_FIRST = [
    (["--data.image_folder={tmp}/images"], "{tmp}/images/broken.png cannot be read as an image"),
    (["--data.train_class=11"], "--data.train_class=11: there are no mnist train images"),
    (["--data.train_index=100000"], "--data.train_index=100000 with --data.num_train=1"),
    (["--trainer.max_steps=-5"], "--trainer.max_steps=-5 is not valid; it must be >= 0"),
    (["--trainer.min_steps=-1"], "--trainer.min_steps=-1 is not valid; it must be >= 0"),
    (["--model.channels=1000000000"], "too large to build"),
    (["--model.channels=100000"], "parameters: training it with amsgrad needs about"),
    (["--model.fit_threshold=-1"], "--model.fit_threshold=-1 is not valid; it must be > 0"),
    (["--model.stop_loss=0"], "--model.stop_loss=0 is not valid"),
    (["--trainer.accelerator=gpu"], "--trainer.accelerator=gpu"),
    (["--run.root=/proc/no-runs-here"], "the run folder /proc/no-runs-here"),
    (["--data.root={tmp}/truncated"], "is corrupt or truncated (md5"),
]


def make_bad_files(tmp: Path, data_root: Path) -> None:
    """A folder with one image that does not decode, and a data root of truncated archives."""
    (tmp / "images").mkdir()
    Image.new("L", (28, 28), 128).save(tmp / "images" / "fine.png")
    (tmp / "images" / "broken.png").write_bytes(b"not an image")
    for folder in ("MNIST", "FashionMNIST"):
        raw = tmp / "truncated" / folder / "raw"
        raw.mkdir(parents=True)
        for archive in (data_root / folder / "raw").glob("*.gz"):
            (raw / archive.name).write_bytes(archive.read_bytes()[:5000])


@pytest.mark.parametrize(
    "args, needle",
    BAD_INPUTS + [(["--config", "configs/cnn.yaml", *a], n) for a, n in CHECKED_FIRST],
)
def test_bad_input_is_refused_before_training_in_one_line(
    capsys, cli_args, data_root, tmp_path, args, needle
):
    make_bad_files(tmp_path, data_root)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if any(a.startswith("--data.root=") for a in args):
        cli_args = [a for a in cli_args if not a.startswith("--data.root=")]
    code, out, err = run_cli(capsys, *cli_args, *args)
    assert code == 2
    assert needle.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 2  # the error and where to look
    assert "run folder" not in out  # nothing ran
    assert not (tmp_path / "runs").exists()  # and nothing is left behind


def test_missing_data_names_the_files_and_where_they_go(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(
        capsys, "--config", "configs/cnn.yaml", f"--data.root={empty}", "--data.download=false"
    )
    assert code == 2
    assert "train-images-idx3-ubyte.gz" in err and str(empty / "MNIST" / "raw") in err


def test_a_finite_blow_up_is_a_diverged_run_too(capsys, cli_args):
    args = ["--config", "configs/cnn.yaml", "--model.depth=2", "--model.channels=4"]
    args += ["--model.lr=1000", "--trainer.min_steps=0", "--trainer.max_steps=40"]
    code, out, err = run_cli(capsys, *args, *cli_args)
    assert code == 1
    assert "more than 10 x the first step's" in err
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("run folder: "))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "metrics" not in metrics


def test_a_diverged_run_is_recorded_as_failed_not_as_a_result(capsys, cli_args):
    args = ["--config", "configs/fcn.yaml", "--model.depth=2", "--model.activation=linear"]
    args += ["--model.optimizer=sgd", "--model.lr=1e6", "--model.check_every=5"]
    code, out, err = run_cli(capsys, *args, "--trainer.max_steps=50", *cli_args)
    assert code == 1
    assert "diverged" in err
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("run folder: "))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "diverged" in metrics["error"]
    assert "metrics" not in metrics
    assert not (run_dir / "probe_panel.png").exists()


def test_console_command_reports_a_user_error_without_traceback(data_root, tmp_path):
    command = Path(sys.executable).with_name("identity-crisis")
    result = subprocess.run(
        [str(command), "fit", "--config", "configs/cnn.yaml", "--model.depth=-3"],
        capture_output=True,
        text=True,
        env={**os.environ, "IDC_DATA_DIR": str(data_root), "IDC_RUN_DIR": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 2
    assert "--model.depth=-3" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_module_beside_the_cli_shadows_the_standard_library():
    # Sweeps run `python identity_crisis/cli.py`, which puts identity_crisis/ first on sys.path:
    # a module there named like a stdlib one (signal.py, ...) would replace it in every import.
    package = Path(__file__).resolve().parents[1] / "identity_crisis"
    names = {path.stem for path in package.glob("*.py")}
    assert not names & set(sys.stdlib_module_names)


def test_help_lists_every_subcommand_without_importing_torch():
    code = (
        "import sys; from identity_crisis.commands import main; main(['--help']); "
        "assert 'torch' not in sys.modules and 'wandb' not in sys.modules, 'heavy import'"
    )
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert done.returncode == 0, done.stderr
    for name in ("fit", "test", "sweep", "report", "theory", "init-signal"):
        assert f"\n  {name} " in done.stdout
