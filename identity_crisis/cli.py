"""The `identity-crisis` command.

    identity-crisis fit --config configs/cnn.yaml                  # the default experiment
    identity-crisis fit --config configs/cnn.yaml --model.depth=20 --trainer.max_steps=1500
    identity-crisis fit --config configs/fcn.yaml --print_config   # the resolved config
    identity-crisis fit --help
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --workers 2   # a W&B sweep file, offline

`fit` trains a net on the one training image, then, in the same process and the same W&B run,
scores it on every test set and writes the panels. Everything goes to a run folder,
`<run.root>/<group>/<name>` (or `--run.dir`), named from the hyperparameters; the last line
printed is `run folder: <path>`. W&B runs offline unless a key is set (see `.env.example`).

Exit codes: 0 done; 1 the run failed (diverged, crashed or interrupted: recorded as failed in
`metrics.json` and W&B, never as a result); 2 a bad command line or config (nothing ran).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import wandb
from jsonargparse import ArgumentError, Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

from datamodules import sources
from datamodules.single_example import SingleExampleDataModule
from identity_crisis import preflight, run_folder
from identity_crisis.callbacks import (
    FailureRecord,
    KeepWeights,
    ProbePanels,
    RunSummary,
    wandb_loggers,
)
from identity_crisis.commands import COMMANDS, LIGHTNING_COMMANDS
from identity_crisis.commands import main as commands_main
from identity_crisis.errors import ConfigError, disk_error
from identity_crisis.jsonio import atomic_path
from identity_crisis.parse_errors import USER_ERRORS, user_error
from identity_crisis.progress import ProgressLines, use_step_bar
from identity_crisis.quiet import QuietProcesses, QuietWandbLogger, silence_third_party
from identity_crisis.tracking import (
    WandbCredentialsMissing,
    finish_wandb,
    load_env_file,
    resolve_wandb_mode,
)
from identity_crisis.trainer_defaults import TRAINER_DEFAULTS
from identity_crisis.verdict import in_words, results_from_metrics
from lightning_modules.base import IdentityTaskModule
from lightning_modules.errors import TrainingFailed

RUN_DIR_ENV = "IDC_RUN_DIR"
DEFAULT_PROJECT = "identity-crisis"


class IdentityCrisisCLI(LightningCLI):
    """LightningCLI for the identity task: one model family (`model.class_path`), the single
    example data module, the run options (`run.*`) and a W&B logger named from the config."""

    def __init__(self, args: list[str] | None = None, run: bool = True, parse_only: bool = False):
        self.parse_only = parse_only
        self.given_args = list(args if args is not None else sys.argv[1:])
        self.run_dir: Path | None = None
        self.run_name = self.run_group = None
        super().__init__(
            model_class=IdentityTaskModule,
            subclass_mode_model=True,
            datamodule_class=SingleExampleDataModule,
            seed_everything_default=0,
            trainer_defaults={
                **TRAINER_DEFAULTS,
                "callbacks": [
                    ProbePanels(),
                    RunSummary(),
                    FailureRecord(),
                    KeepWeights(),
                    ProgressLines(),
                    QuietProcesses(),
                ],
            },
            save_config_callback=RunFolderConfig,
            save_config_kwargs={
                "overwrite": True,
                "config_filename": run_folder.CONFIG,
                "save_to_log_dir": False,
            },
            # Parse errors come back as exceptions, so main() can say them in one line.
            parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else self.config
        # Lightning seeds right after parsing and refuses a seed numpy cannot take with a
        # traceback.
        preflight.check_seed(config.get("seed_everything"))
        self._check_checkpoint(config)

    @staticmethod
    def _check_checkpoint(config: Namespace) -> None:
        # Lightning puts a checkpoint's hyperparameters in place of --config's model right after
        # parsing, and a file that is no checkpoint would end in torch's traceback: a checkpoint
        # that is unreadable, of another family or of another architecture is refused first, so
        # what Lightning puts in place can differ only in training settings a test never uses.
        if not config.get("ckpt_path") or not Path(config.ckpt_path).is_file():
            return
        model = config.get("model")
        if not model or not model.get("class_path"):  # no --config: the checkpoint's model
            preflight.check_checkpoint(config.ckpt_path, "", {})
            return
        init_args = model.get("init_args")
        preflight.check_checkpoint(
            config.ckpt_path, model.class_path, init_args.as_dict() if init_args else {}
        )

    def before_instantiate_classes(self) -> None:
        config = self._config()
        if self.subcommand == "test" and "--verbose" not in " ".join(self.given_args):
            # Lightning's wide "DataLoader 0 / DataLoader 1" table: the run prints its own.
            config.verbose = False
        if config.trainer.get("default_root_dir") is not None:
            raise ConfigError(
                f"--trainer.default_root_dir={config.trainer.default_root_dir} is not used: every "
                "run writes into its own run folder; use --run.root (the folder of run folders) "
                "or --run.dir (this run's folder)"
            )
        preflight.check_run_config(config)
        if self.parse_only:
            raise _Parsed
        # Checked before anything is built: a net too big for the machine would fail in its
        # own constructor with an allocation error.
        preflight.check_steps(config.trainer.max_steps, config.trainer.min_steps)
        preflight.check_data_memory(config.data)
        model = config.model
        preflight.check_memory(
            model.class_path, model.init_args.as_dict(), str(config.trainer.accelerator)
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
        }

    def add_arguments_to_parser(self, parser) -> None:
        # The data fixes the image shape (CIFAR-10 is 3 x 32 x 32); the net follows it.
        parser.link_arguments(
            "data.image_shape", "model.init_args.image_shape", apply_on="instantiate"
        )
        # Scores are logged under each test set's name, which the data knows.
        parser.link_arguments(
            "data.test_set_names", "model.init_args.test_set_names", apply_on="instantiate"
        )
        # The minibatch order follows the run's seed, the same on every rank of a DDP run.
        parser.link_arguments("seed_everything", "data.shuffle_seed", compute_fn=seed_or_none)
        parser.add_argument(
            "--run.root",
            type=str,
            default=os.environ.get(RUN_DIR_ENV, "runs"),
            help=f"folder of run folders (default ${RUN_DIR_ENV}, else ./runs)",
        )
        parser.add_argument("--run.dir", type=str | None, default=None, help="exact run folder")
        parser.add_argument("--run.name", type=str | None, default=None, help="default: derived")
        parser.add_argument(
            "--run.group", type=str | None, default=None, help="W&B group; default: derived"
        )
        parser.add_argument(
            "--run.project", type=str, default=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT)
        )
        parser.add_argument("--run.entity", type=str | None, default=os.environ.get("WANDB_ENTITY"))
        parser.add_argument("--run.tags", type=list[str], default=[])
        parser.add_argument(
            "--run.sweep",
            type=str | None,
            default=None,
            help="the sweep this run is a cell of (set by `identity-crisis sweep`): a W&B tag "
            "sweep:<name>, so runs synced later can be grouped by sweep",
        )
        parser.add_argument(
            "--run.replace",
            type=bool,
            default=False,
            help="train again in place of a finished run of the same config (else refused)",
        )
        parser.add_argument(
            "--run.keep_weights",
            type=bool,
            default=True,
            help=f"keep the trained weights as {run_folder.WEIGHTS} in the run folder",
        )

    def _config(self) -> Namespace:
        return self.config.get(str(self.subcommand), self.config)

    def derived_names(self) -> tuple[str, str]:
        """(name, group): the hyperparameters, with and without the seed, so a dashboard groups
        the seeds of one configuration."""
        config = self._config()
        base = "-".join(self.model.name_parts() + self.datamodule.name_parts())
        name = config.run.name or f"{base}-s{config.seed_everything}"
        if self.subcommand == "test":
            name = f"{name}-test"
        return name, config.run.group or base

    def resolved_config(self) -> dict:
        config = self._config().clone().as_dict()
        config.pop("config", None)
        return run_folder.flatten_config(config)

    def choose_run_dir(self) -> Path:
        """`--run.dir`, else <root>/<group>/<name>-<hash>: the readable name, and a hash of every
        key that can change the result, so different configs never share a folder."""
        config = self._config()
        digest = run_folder.config_hash(self.resolved_config())
        if self.subcommand == "test":  # even for a config whose run.dir names the trained run
            return self.probe_dir(digest)
        if config.run.dir:
            return Path(config.run.dir).resolve()
        return (Path(config.run.root) / self.run_group / f"{self.run_name}-{digest}").resolve()

    def probe_dir(self, digest: str) -> Path:
        """A re-probe's results go beside the trained run, never into it."""
        ckpt = Path(self._config().ckpt_path or "").resolve()
        return ckpt.parent.with_name(f"{ckpt.parent.name}-test-{digest}")

    def check_before_run(self) -> None:
        """Everything that can fail before a run folder or W&B run exists."""
        config = self._config()
        if self.subcommand == "test" and not (
            config.ckpt_path and Path(config.ckpt_path).is_file()
        ):
            raise ConfigError(
                f"--ckpt_path={config.ckpt_path} is not a file; give a run's {run_folder.WEIGHTS}"
            )
        preflight.check_writable(self.run_dir, "the run folder")
        preflight.check_writable(sources.cache_dir(), "the data cache")
        # Reads, md5-checks and decodes every data file now, not after training.
        self.datamodule.prepare_data()
        self.datamodule.setup("test")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self._config()
        self.run_name, self.run_group = self.derived_names()
        self.run_dir = self.choose_run_dir()
        if not self.parse_only:
            self.check_before_run()
        trainer = super().instantiate_trainer(
            logger=self.loggers(), default_root_dir=str(self.run_dir), **kwargs
        )
        self._check_data_parallel(trainer.world_size)
        use_step_bar(trainer)
        for callback in trainer.callbacks:
            if isinstance(callback, KeepWeights):
                callback.enabled = config.run.keep_weights
        return trainer

    def loggers(self) -> bool | Logger | list[Logger]:
        """`--trainer.logger`: unset or true, the W&B run; false, no logger (no W&B run); a
        logger or a list of them, those."""
        asked = self.config_init.get(str(self.subcommand), self.config_init).get("trainer", {})
        asked = asked.get("logger")
        if asked is False or isinstance(asked, Logger | list | tuple):
            return asked
        config = self._config()
        tags = list(config.run.tags)
        sweep = config.run.sweep or os.environ.get("WANDB_SWEEP_ID")
        if sweep:
            tags.append(f"sweep:{sweep}")
        return QuietWandbLogger(
            name=self.run_name,
            group=self.run_group,
            job_type=str(self.subcommand or "fit"),
            project=config.run.project,
            entity=config.run.entity,
            tags=tags,
            save_dir=str(self.run_dir),
            # The mode resolve_wandb_mode chose, given outright: W&B reads the environment once
            # per process, and a worker or agent trains many runs in one.
            mode=os.environ.get("WANDB_MODE") or None,
            # The run's own summary table replaces W&B's long history printout.
            settings=wandb.Settings(quiet=True),
        )

    def _check_data_parallel(self, world_size: int) -> None:
        """Data-parallel training splits each step's images over the processes; equal shards
        make the averaged gradient exactly the gradient of the whole batch."""
        hp = self.datamodule.hparams
        key, count = "num_train", hp.num_train
        if hp.train_batch_size is not None:
            key, count = "train_batch_size", hp.train_batch_size
        if world_size > 1 and count % world_size:
            raise ConfigError(
                f"--data.{key}={count} cannot be split evenly over {world_size} "
                f"processes (devices x nodes); use a multiple of {world_size} or one device"
            )
        if world_size > 1:
            for name, images in self.datamodule.test_inputs.items():
                if len(images) < world_size:
                    raise ConfigError(
                        f"test set {name} has {len(images)} images, fewer than the {world_size} "
                        f"processes (devices x nodes) that share it; give it at least "
                        f"{world_size} (--data.test_size) or use one device"
                    )

    @property
    def wandb_logger(self) -> WandbLogger | None:
        return next(iter(wandb_loggers(self.trainer)), None)

    def before_fit(self) -> None:
        self._start_run()

    def before_test(self) -> None:
        self._start_run()

    @rank_zero_only
    def _start_run(self) -> None:
        """Claim the run folder (refusing one with a finished result or a live trainer), lock
        it, and start the W&B run with the whole config under the command line's names."""
        made = run_folder.missing_folders(self.run_dir)
        try:
            before = run_folder.claim(
                self.run_dir,
                replace=self._config().run.replace,
                probe=self.subcommand == "test",
            )
            run_folder.write_lock(self.run_dir)
            run_folder.reserve_space(self.run_dir)
        except FileExistsError:
            raise ConfigError(f"{self.run_dir} was just taken by another process") from None
        except run_folder.RunFolderTaken as taken:
            raise ConfigError(str(taken)) from None
        except OSError as error:  # a full or read-only disk, before any work: exit 2
            run_folder.remove_if_empty(made)
            if (message := disk_error(error)) is None:
                raise
            raise ConfigError(message) from None
        if before is not None:
            print(f"{self.run_dir} held an earlier {before} run: trained again", flush=True)
        print(f"run {self.run_name} (group {self.run_group})", flush=True)
        try:
            if self.wandb_logger is not None:
                run = self.wandb_logger.experiment
                run.config.update(self.resolved_config(), allow_val_change=True)
                if not (run.offline or run.disabled):
                    print(f"W&B run: {run.url}", flush=True)
        except BaseException:
            # Training never started: the lock would only make the folder look taken.
            run_folder.release_space(self.run_dir)
            run_folder.release_lock(self.run_dir)
            raise

    def after_fit(self) -> None:
        self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        self._finish_run()

    def after_test(self) -> None:
        self._finish_run()

    @rank_zero_only
    def _finish_run(self) -> None:
        print(self.results_table(), flush=True)
        if self.wandb_logger is not None:
            finish_wandb(self.wandb_logger, exit_code=0)
        run_folder.drop_previous(self.run_dir)
        run_folder.release_space(self.run_dir)
        run_folder.release_lock(self.run_dir)
        print(f"run folder: {self.run_dir}", flush=True)

    def results_table(self) -> str:
        """The run's scores as `metrics.json` holds them: the file rank 0 wrote is the one
        record, whichever process (a DDP spawn worker) computed it."""
        summary = run_folder.read_metrics(self.run_dir)
        found = results_from_metrics(summary.get("metrics", {}))
        # In the data module's order (MNIST first), not the file's alphabetical one.
        order = [name for name in self.model.test_set_names if name in found]
        results = {name: found[name] for name in [*order, *sorted(set(found) - set(order))]}
        loss, fitted = summary.get("train/final_loss"), summary.get("fitted")
        threshold = self.model.hparams.fit_threshold
        lines = [
            f"final training MSE {loss:.3g} "
            + ("(fitted)" if fitted else f"(NOT fitted: > {threshold:g})"),
            f"{'test set':<16}{'identity':>10}{'constant':>10}   verdicts id/const/neither",
        ]
        for name, s in results.items():
            lines.append(
                f"{name:<16}{s['identity_corr']:>10.3f}{s['constant_corr']:>10.3f}   "
                f"{s['frac_identity']:.2f}/{s['frac_constant']:.2f}/{s['frac_neither']:.2f}"
            )
        lines.append(f"learned: {in_words(results, fitted)}")
        return "\n".join(lines + layers_line(summary.get("layers", {})))


def seed_or_none(seed) -> int | None:
    """`seed_everything` as a seed: an int; true (a random seed, drawn later) or false, none."""
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def layers_line(layer_results: dict) -> list[str]:
    """How far the input gets through the trained net, in words (empty without hidden layers)."""
    live, carried = layer_results.get("live_share"), layer_results.get("input_share")
    if not live:
        return []
    blind = layer_results.get("first_blind_layer")
    if blind is None:
        lowest = min(range(len(carried)), key=carried.__getitem__)
        return [
            f"hidden layers: every one carries the input (least: layer {lowest + 1}, "
            f"{carried[lowest]:.0%} of its variance input-dependent)"
        ]
    if live[blind - 1] == 0:
        why = "dead: no unit is positive for any test input"
    else:
        why = f"blind to the input: {carried[blind - 1]:.2%} of its variance depends on it"
    return [f"hidden layer {blind} is {why}; nothing after it can depend on the input"]


class RunFolderConfig(SaveConfigCallback):
    """The resolved config goes into the run folder, whichever logger (if any) is used."""

    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        path = Path(trainer.default_root_dir) / self.config_filename
        with atomic_path(path) as tmp:  # the temporary exists already: overwrite it
            self.parser.save(
                self.config, tmp, skip_unset=False, overwrite=True, multifile=self.multifile
            )


class _Parsed(Exception):
    """Raised once a parse-only command line is parsed: nothing is built."""


def check_fit_args(argv: list[str]) -> str | None:
    """Parse `fit`'s arguments as `identity-crisis fit` would, building nothing (no model, no
    data, no run folder): the one-line error of a bad command line, or None when it parses.
    The sweep runner checks every cell with it before the first one starts."""
    try:
        IdentityCrisisCLI(args=list(argv), run=False, parse_only=True)
    except _Parsed:
        return None
    except (*USER_ERRORS, ArgumentError, ValueError) as error:
        return user_error(error, argv) or " ".join(str(error).split())
    return None


def wandb_args(argv: list[str]) -> list[str]:
    """W&B agents format a YAML null as `--key=None`; the config language spells it null."""
    return [arg.removesuffix("=None") + "=null" if arg.endswith("=None") else arg for arg in argv]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `identity-crisis` console command."""
    argv = wandb_args(sys.argv[1:] if argv is None else list(argv))
    if argv and argv[0] in COMMANDS and argv[0] not in LIGHTNING_COMMANDS:
        return commands_main(argv)  # `python identity_crisis/cli.py sweep ...` still works
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended")
    silence_third_party()
    # W&B logs into the run folder; on a full disk each of its log lines would print a
    # "--- Logging error ---" traceback. The run's own failure line says what happened.
    logging.raiseExceptions = False
    try:
        load_env_file()
        resolve_wandb_mode()
    except WandbCredentialsMissing as error:
        print(f"identity-crisis: error: {error}", file=sys.stderr)
        sys.exit(2)
    for flag, path in zip(argv, argv[1:], strict=False):
        if (
            flag in ("--config", "-c")
            and Path(path).is_file()
            and not Path(path).read_text().strip()
        ):
            print(f"identity-crisis: error: --config {path} is empty", file=sys.stderr)
            sys.exit(2)
    # `wandb.agent` with a function runs each run in a thread of its own, where no handler can be
    # set; the agent's process has its own Ctrl-C (identity_crisis.wandb_agent).
    if threading.current_thread() is threading.main_thread():
        # A closed terminal (SIGHUP) stops a run as Ctrl-C does: recorded interrupted, weights kept.
        signal.signal(signal.SIGHUP, _interrupt)
        # SIGINT stops a run even when the shell that started it ignores SIGINT (a background job).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    command = argv[0] if argv and argv[0] in ("fit", "test") else "fit"
    try:
        IdentityCrisisCLI(args=argv)
    except (*USER_ERRORS, ArgumentError, ValueError, MisconfigurationException) as error:
        message = user_error(error, argv)
        if message is None and isinstance(error, MisconfigurationException):
            # Lightning's device errors name no option: the accelerator or devices asked for.
            asked = [
                a for a in argv if a.startswith(("--trainer.accelerator", "--trainer.devices"))
            ]
            message = " ".join([*asked, " ".join(str(error).split())])
        if message is None:
            raise
        print(f"identity-crisis: error: {message}", file=sys.stderr)
        print(f"see: identity-crisis {command} --help", file=sys.stderr)
        sys.exit(2)
    except TrainingFailed as error:
        print(f"identity-crisis: run failed: {error}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        if (message := disk_error(error)) is None:
            raise
        print(f"identity-crisis: run failed: {message}", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:
        # Lightning stops on SIGTERM (SLURM's time limit, `timeout`, the sweep runner) by raising
        # a SystemExit without a code, which would exit 0: the run was interrupted.
        print("identity-crisis: run interrupted (SIGTERM)", file=sys.stderr)
        sys.exit(1)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    main()
