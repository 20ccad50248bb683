"""What a run says and to whom: the verdict in words, progress lines, third-party noise, W&B's
credential rules, the loggers a user asks for, and the runner's slots (issue 12)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
import torch
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import CSVLogger

from identity_crisis import slots, tracking
from identity_crisis.cli import IdentityCrisisCLI
from identity_crisis.errors import ConfigError
from identity_crisis.progress import ProgressLines, StepBar
from identity_crisis.sweep import cell_result
from identity_crisis.trainer_defaults import TRAINER_DEFAULTS
from identity_crisis.verdict import in_words, percent, results_from_metrics
from lightning_modules import CNN
from tests.conftest import REPO

SMALL = ["--model.depth=2", "--model.channels=4", "--trainer.max_steps=30", "--data.test_size=8"]


def scores(identity: float, constant: float) -> dict[str, float]:
    return {
        "frac_identity": identity,
        "frac_constant": constant,
        "frac_neither": 1 - identity - constant,
    }


# --- the verdict in words ---------------------------------------------------------------------


def test_the_sentence_gives_the_mnist_shares_and_the_overall_ones():
    results = {"mnist": scores(0.9, 0.0), "gaussian_noise": scores(0.0, 0.25)}
    text = in_words(results)
    assert text.startswith("the identity on 90% of MNIST digits, the constant on 0%")
    assert "over all 2 test sets: identity 45%, constant 12%, neither 42%" in text


def test_a_net_that_outputs_the_training_image_everywhere_is_called_the_constant():
    results = {name: scores(0.0, 1.0) for name in ("mnist", "fashion", "patterns")}
    assert in_words(results) == "the constant: the training image for every input of all 3 sets"
    assert "NOT fitted" in in_words(results, fitted=False)


def test_shares_never_round_to_none_or_all():
    assert percent(0.001) == "<1%" and percent(0.999) == ">99%"
    assert percent(0.0) == "0%" and percent(1.0) == "100%" and percent(0.5) == "50%"


def test_a_cell_line_reads_the_run_folders_metrics(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    metrics = {f"test/mnist/{k}": v for k, v in scores(0.25, 0.75).items()}
    (run / "metrics.json").write_text(
        f'{{"status": "ok", "fitted": true, "train/final_loss": 2e-8, "metrics": '
        f"{str(metrics).replace(chr(39), chr(34))}}}"
    )
    assert results_from_metrics(metrics) == {"mnist": scores(0.25, 0.75)}
    line = cell_result(run)
    assert line.startswith("fitted (train MSE 2.0e-08); the identity on 25% of MNIST digits")
    assert "the constant on 75%" in line


# --- list syntax and option names shared by the commands --------------------------------------


def test_lists_take_fits_bracket_syntax_and_one_bare_value():
    from identity_crisis.init_signal import parse_args as init_args
    from identity_crisis.report import parse_args as report_args

    assert init_args(["--depths=[7,14, 20]", "--inits=[default,orthogonal]"]).depths == [7, 14, 20]
    assert init_args(["--depths", "20", "--inits", "orthogonal"]).inits == ["orthogonal"]
    report = report_args(["runs", "--hidden", "[7,14,20]", "--key", "model.depth"])
    assert (report.hidden, report.key) == ([7, 14, 20], ["model.depth"])
    # The comma form of old is refused, naming the list syntax.
    with pytest.raises(
        ConfigError, match=r"--depths=7,14 is not valid; .* as a list, e.g. \[5,20\]"
    ):
        init_args(["--depths=7,14"])


def test_init_signal_and_theory_take_the_option_names_fit_uses():
    from identity_crisis.init_signal import parse_args as init_args
    from identity_crisis.theory import parse_args as theory_args

    args = init_args(
        ["--data.root=/d", "--data.test_size=4", "--model.channels=8", "--depths=[1,3]"]
    )
    assert (args.data_root, args.test_size, args.channels, args.depths) == ("/d", 4, 8, [1, 3])
    theory = theory_args(["--kernels=[1,3]", "--data.test_size=5", "--seed_everything=2"])
    assert (theory.kernels, theory.test_size, theory.seed) == ([1, 3], 5, 2)


# --- W&B by W&B's rules -------------------------------------------------------------------------


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(tracking.AGENT_ENV, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path


def test_a_self_hosted_server_with_a_netrc_entry_goes_online(wandb_env, monkeypatch):
    (wandb_env / "netrc").write_text("machine wandb.example.org:8080\n  login user\n  password k\n")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org:8080/")
    assert tracking.resolve_wandb_mode() == "online"
    # The public server has no entry in that file: offline.
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_BASE_URL")
    assert tracking.resolve_wandb_mode() == "offline"


def test_the_netrc_rules_are_wandbs_own(wandb_env, monkeypatch):
    wbnetrc = pytest.importorskip("wandb.sdk.lib.wbauth.wbnetrc")
    key = "x" * 40
    (wandb_env / "netrc").write_text(f"machine api.wandb.ai login user password {key}\n")
    for url in ("https://api.wandb.ai", "https://other.example.org"):
        assert tracking.netrc_key(url) == wbnetrc.read_netrc_auth(host=url)


def test_a_wandb_agent_run_goes_online_and_online_without_a_key_is_one_error(
    wandb_env, monkeypatch
):
    monkeypatch.setenv(tracking.AGENT_ENV, "abc123")
    assert tracking.resolve_wandb_mode() == "online"
    monkeypatch.delenv(tracking.AGENT_ENV)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(tracking.WandbCredentialsMissing, match="wandb login"):
        tracking.resolve_wandb_mode()


def test_env_file_inline_comments_and_quotes_follow_dotenv(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("IDC_TEST_QUOTED", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "from-the-shell")
    env = tmp_path / ".env"
    env.write_text(
        "WANDB_MODE=offline  # no server here\n"
        "export IDC_TEST_QUOTED='a # b'\n"
        "WANDB_PROJECT=from-the-file\n"
        "WANDB_ENTITY=\n"
    )
    loaded = tracking.load_env_file(env)
    assert loaded == {"WANDB_MODE": "offline", "IDC_TEST_QUOTED": "a # b"}
    assert os.environ["WANDB_PROJECT"] == "from-the-shell"


# --- loggers and folders a user asks for --------------------------------------------------------


def build(data_root, tmp_path, *args) -> IdentityCrisisCLI:
    # run=False: no subcommand, as a notebook builds it; `fit` is the default job.
    argv = ["--config", "configs/cnn.yaml", *SMALL, f"--data.root={data_root}"]
    return IdentityCrisisCLI(args=[*argv, f"--run.root={tmp_path}", *args], run=False)


def test_fit_runs_carry_a_job_type_and_sweep_cells_their_sweeps_tag(data_root, tmp_path):
    cli = build(data_root, tmp_path, "--run.sweep=fig3", "--run.tags=[mine]")
    init = cli.trainer.logger._wandb_init
    assert init["job_type"] == "fit" and init["tags"] == ["mine", "sweep:fig3"]
    assert "anonymous" not in init  # W&B warns when the key is passed at all


def test_logger_false_means_no_wandb_run_and_another_logger_is_used(data_root, tmp_path):
    assert build(data_root, tmp_path, "--trainer.logger=false").trainer.loggers == []
    csv = build(
        data_root,
        tmp_path,
        "--trainer.logger=CSVLogger",
        f"--trainer.logger.save_dir={tmp_path / 'csv'}",
    )
    assert [type(lg).__name__ for lg in csv.trainer.loggers] == ["CSVLogger"]


def run_fit(data_root, tmp_path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "", "NETRC": str(tmp_path / "n")}
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_SHOW_INFO", None)
    command = [sys.executable, "-m", "identity_crisis.cli", "fit", "--config", "configs/cnn.yaml"]
    return subprocess.run(
        [*command, *SMALL, f"--data.root={data_root}", f"--run.root={tmp_path / 'runs'}", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )


# Every line a default run prints is the project's own.
OWN_LINES = re.compile(
    r"^(run \S+ \(group \S+\)|training: .*|final training MSE .*|test set .*|\w+ +-?\d\.\d{3} .*"
    r"|learned: .*|hidden layers?: .*|W&B ran offline; upload with: wandb sync .*"
    r"|run folder: .*)$"
)


def test_a_default_run_prints_no_third_party_line(data_root, tmp_path):
    result = run_fit(data_root, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    foreign = [line for line in lines if not OWN_LINES.match(line)]
    assert foreign == []
    assert any(line.startswith("learned: ") for line in lines)


def test_default_root_dir_is_refused_in_one_line(data_root, tmp_path):
    result = run_fit(data_root, tmp_path, f"--trainer.default_root_dir={tmp_path}")
    assert result.returncode == 2
    assert "--trainer.default_root_dir" in result.stderr and "--run.root" in result.stderr
    assert not (tmp_path / "runs").exists()


# --- progress -------------------------------------------------------------------------------------


def tiny_trainer(callbacks, **overrides) -> Trainer:
    options = {**TRAINER_DEFAULTS, "max_steps": 40, "min_steps": 20, "logger": False}
    return Trainer(**{**options, "callbacks": callbacks, **overrides})


def test_off_a_terminal_a_line_gives_step_loss_speed_and_time(tiny_data):
    stream = io.StringIO()
    lines = ProgressLines(every_s=0, stream=stream)
    model = CNN(depth=1, stop_loss=1e-12, check_every=5)
    tiny_trainer([lines], enable_progress_bar=False).fit(model, datamodule=tiny_data())
    printed = stream.getvalue().splitlines()
    assert printed[0] == (
        "training: at least 20 steps, then until the training MSE < 1e-12, at most 40 steps"
    )
    # One line per training call at most; a call runs up to the next loss check (every 5 steps),
    # whose loss the line shows.
    step = re.compile(r"^step (\d+)/40  loss \d\.\d\de[-+]\d+  [\d.]+ steps/s  elapsed 0:\d\d$")
    matches = [step.match(line) for line in printed[1:]]
    assert all(matches), printed[:4]
    assert [int(m.group(1)) for m in matches] == list(range(5, 41, 5))


def test_the_bar_has_no_total_under_a_stop_rule_and_no_test_bars(tiny_data):
    bar = StepBar()
    trainer = tiny_trainer([bar], enable_progress_bar=True)
    model = CNN(depth=1, stop_loss=1e-12, check_every=5)
    trainer.fit(model, datamodule=tiny_data())
    assert bar.train_progress_bar.total is None
    assert "until the training MSE < 1e-12" in bar.train_progress_bar.desc
    trainer.test(model, datamodule=tiny_data(), verbose=False)
    assert bar.test_progress_bar.disable


def test_the_bar_counts_optimizer_steps_not_training_calls(tiny_data, tmp_path):
    bar = StepBar()
    trainer = tiny_trainer(
        [bar], enable_progress_bar=True, logger=CSVLogger(tmp_path), min_steps=None
    )
    model = CNN(depth=1, check_every=5)  # no stop rule: 40 steps in 8 calls of 5 steps each
    trainer.fit(model, datamodule=tiny_data())
    assert trainer.global_step == 40
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (40, 40)
    assert bar.train_progress_bar.unit == "step"
    assert "v_num" not in bar.get_metrics(trainer, model)


# --- the runner's slots ---------------------------------------------------------------------------


def test_gpu_ids_that_do_not_exist_are_refused(monkeypatch):
    monkeypatch.setattr(slots, "visible_gpus", lambda: ["2", "3"])
    assert slots.choose_gpus("3", None) == ["3"]
    assert slots.choose_gpus(None, None) == ["2", "3"]
    assert slots.choose_gpus(None, 4) == [] and slots.choose_gpus("none", None) == []
    with pytest.raises(ConfigError, match=r"--gpus 0: no GPU 0 here; visible GPUs: 2, 3"):
        slots.choose_gpus("0", None)
    monkeypatch.setattr(slots, "visible_gpus", list)
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        slots.choose_gpus("0", None)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert slots.visible_gpus() == ["4", "6"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert slots.visible_gpus() == ["0", "1"]


def test_workers_default_to_the_cpus_this_process_may_use():
    assert slots.usable_cpus() == len(os.sched_getaffinity(0))
    result = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-c",
            "from identity_crisis import slots; print(slots.usable_cpus())",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0 and result.stdout.strip() == "1"
