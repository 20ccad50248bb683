"""Callbacks that turn a tested net into files a researcher reads: the probe panel, the
hidden-layer maps (paper figure 4), the per-probe scores and `metrics.json`, and the record of a
run that failed.

Everything lands in the run folder, `trainer.default_root_dir` (see `run_folder`), and goes to
W&B as well when a WandbLogger is attached.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from identity_crisis import run_folder
from identity_crisis.errors import disk_error, name_disk_path
from identity_crisis.images import (
    figure_rgb,
    fit_status,
    hidden_maps_figure,
    probe_panel_figure,
    save_png,
)
from identity_crisis.jsonio import atomic_path
from identity_crisis.tracking import finish_wandb
from lightning_modules.errors import TrainingFailed
from lightning_modules.metrics import VERDICTS, is_test_key, per_image_scores


def wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
    """The trainer's W&B loggers whose run exists: WANDB_MODE=disabled gives a stand-in run with
    no folder and no record, where nothing W&B-specific is done."""
    return [
        lg for lg in trainer.loggers if isinstance(lg, WandbLogger) and not lg.experiment.disabled
    ]


def layer_notes(layer_results: dict) -> list[str]:
    """Under each trained layer's label: the share of its units alive and of its variance that
    depends on the input, over every test input; 'dead' where no unit is ever positive."""
    notes = []
    for live, carried in zip(
        layer_results.get("live_share", []), layer_results.get("input_share", []), strict=True
    ):
        notes.append("dead" if live == 0 else f"{share(live)} live, {share(carried)} input")
    return notes


def share(value: float) -> str:
    """A share as a percentage that never rounds a small one to 0% (0 is only for none)."""
    if value == 0 or value >= 0.01:
        return f"{value:.0%}"
    return f"{value * 100:.1g}%"


def run_title(trainer: Trainer, pl_module: LightningModule) -> str:
    """The run's name as `fit` derives it (model and data name parts, then the seed), for the
    figures' titles: a sweep cell's folder is only called `run`."""
    parts = [*pl_module.name_parts(), *trainer.datamodule.name_parts()]
    # seed_everything leaves the seed here; a run without one has no seed to name.
    seed = os.environ.get("PL_GLOBAL_SEED")
    return "-".join(parts) + (f"-s{seed}" if seed is not None else "")


class ProbePanels(Callback):
    """After testing, run the data module's probe inputs through the net and write:

    - `probe_panel.png`: the run's name and fit as a title, inputs over outputs, the training
      image first behind a red divider, each output's identity / constant correlation under it;
    - `hidden_trained.png`, `hidden_init.png` (families with image-shaped layers): one channel-mean
      map per layer, for the trained net and for the same net at initialization, each row
      labelled (dead and flat layers said so) above the colour scales;
    - `probe_predictions.npz`: inputs, outputs and per-probe scores, for reports;
    - W&B: the panels as uint8 images and a `probe/scores` table.
    """

    def __init__(self, hidden_maps: bool = True):
        self.hidden_maps = hidden_maps
        self.initial_state: dict[str, torch.Tensor] | None = None
        self.figures: dict[str, Figure] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.hidden_maps:
            state = pl_module.state_dict()
            self.initial_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    @torch.no_grad()
    def _maps(self, pl_module: LightningModule, inputs: torch.Tensor) -> list[torch.Tensor] | None:
        maps = pl_module.hidden_maps(inputs)
        return None if maps is None else [m.float().cpu() for m in maps]

    @rank_zero_only
    @torch.no_grad()
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run_dir = Path(trainer.default_root_dir)
        names = list(trainer.datamodule.probe_names)
        probes = trainer.datamodule.probe_inputs().to(pl_module.device, pl_module.dtype)
        outputs = pl_module(probes)
        threshold = pl_module.hparams.verdict_threshold
        scores = per_image_scores(probes, outputs, pl_module.constant_targets(outputs), threshold)
        scores = {k: v.cpu().numpy() for k, v in scores.items()}
        inputs, outputs = probes.float().cpu(), outputs.float().cpu()
        name = run_title(trainer, pl_module)
        status = fit_status(pl_module.fitted, pl_module.final_train_loss)
        headline = f"{name}: {status}"
        if trainer.ckpt_path is not None:  # a re-probe: the net was trained by another run
            headline = f"re-probe of {Path(trainer.ckpt_path).parent.name}: {status}"
        figures = {
            run_folder.PROBE_PANEL: probe_panel_figure(
                inputs, outputs, scores, title=headline, threshold=threshold
            )
        }
        trained = self._maps(pl_module, probes) if self.hidden_maps else None
        if trained is not None:
            figures[run_folder.HIDDEN_TRAINED] = hidden_maps_figure(
                inputs,
                trained,
                title=f"hidden layers, trained ({status})\n{name}",
                layer_notes=layer_notes(pl_module.layer_results),
            )
            if self.initial_state is not None:
                figures[run_folder.HIDDEN_INIT] = hidden_maps_figure(
                    inputs,
                    self._initial_maps(pl_module, probes),
                    title=f"hidden layers at random init (before training)\n{name}",
                )
        # Kept for whoever holds the callback (tests, notebooks): the text is in the figures.
        self.figures = figures
        panels = {filename: figure_rgb(figure) for filename, figure in figures.items()}
        for filename, panel in panels.items():
            save_png(panel, run_dir / filename)
        predictions = run_folder.write_predictions(
            run_dir, names, inputs.numpy(), outputs.numpy(), scores
        )
        step = pl_module.steps_done  # the test scores' step: one axis with training
        for logger in wandb_loggers(trainer):
            for filename, panel in panels.items():
                logger.log_image(f"panels/{Path(filename).stem}", [panel], step=step)
            logger.log_table("probe/scores", *self._table(names, scores), step=step)
            # The raw probe predictions travel with the run, so `identity-crisis report` can draw
            # prediction grids from a W&B sweep as it does from local run folders.
            # A copy in the run's files folder is uploaded when the run ends (wandb.save would
            # symlink it and say so on the terminal).
            shutil.copy2(predictions, Path(logger.experiment.dir) / predictions.name)

    def _initial_maps(self, pl_module: LightningModule, probes: torch.Tensor) -> list[torch.Tensor]:
        # Swap the initial weights in and back rather than deep-copying a module that holds the
        # trainer.
        trained = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        try:
            pl_module.load_state_dict(self.initial_state)
            return self._maps(pl_module, probes)
        finally:
            pl_module.load_state_dict(trained)

    @staticmethod
    def _table(names: list[str], scores: dict[str, np.ndarray]) -> tuple[list[str], list[list]]:
        """One row per probe, in panel order (the images themselves are in the panel)."""
        numbers = ["identity_corr", "constant_corr", "mse_identity", "mse_constant"]
        rows = [
            [name, *(float(scores[k][i]) for k in numbers), VERDICTS[int(scores["verdict"][i])]]
            for i, name in enumerate(names)
        ]
        return ["probe", *numbers, "verdict"], rows


class RunSummary(Callback):
    """After testing, write `metrics.json`: status, the fit summary and every `test/` score.

    A run whose training diverged never gets here: the command line records it as failed.
    """

    def __init__(self, extra: dict | None = None):
        self.extra = dict(extra or {})

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logged = trainer.callback_metrics
        metrics = {k: float(v) for k, v in logged.items() if is_test_key(k)}
        debug = debugging_run(trainer)
        summary = {
            "status": run_folder.DEBUG if debug else run_folder.OK,
            **({"debug": debug} if debug else {}),
            "fitted": pl_module.fitted,
            "train/final_loss": pl_module.final_train_loss,
            "train/steps": pl_module.steps_done,
            **pl_module.parameter_counts(),
            "data/train_indices": trainer.datamodule.train_indices[:100],
            **self.extra,
            "metrics": dict(sorted(metrics.items())),
        }
        if pl_module.layer_results:
            summary["layers"] = pl_module.layer_results
        run_folder.write_metrics(trainer.default_root_dir, summary)


def debugging_run(trainer: Trainer) -> str | None:
    """What makes this a debugging run (Lightning's fast_dev_run or a cap on the batches it
    trains or tests), in words; None for a real run."""
    if trainer.fast_dev_run:
        return f"trainer.fast_dev_run={trainer.fast_dev_run}"
    limits = {
        "trainer.limit_train_batches": trainer.limit_train_batches,
        "trainer.limit_test_batches": trainer.limit_test_batches,
    }
    capped = [f"{key}={value}" for key, value in limits.items() if value not in (1.0, None)]
    if trainer.overfit_batches:
        capped.append(f"trainer.overfit_batches={trainer.overfit_batches}")
    return ", ".join(capped) or None


class FailureRecord(Callback):
    """A run that did not finish is recorded as failed, with the reason, never as a result: in
    `metrics.json` and in the W&B run's summary, whose run is then closed with exit code 1."""

    @rank_zero_only
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, error: BaseException):
        name_disk_path(error, trainer.default_root_dir)
        disk = disk_error(error)
        if isinstance(error, TrainingFailed) or disk:
            status = run_folder.FAILED
        elif isinstance(error, KeyboardInterrupt | SystemExit):
            status = run_folder.INTERRUPTED
        else:
            status = run_folder.CRASHED
        reason = disk or f"{type(error).__name__}: {error}".rstrip(": ")
        if isinstance(error, SIGTERMException):
            reason = "interrupted by SIGTERM"
        record = {"status": status, "error": reason, "train/steps": trainer.global_step}
        if pl_module.last_loss is not None:
            record["train/last_loss"] = pl_module.last_loss
        run_folder.release_space(trainer.default_root_dir)  # room for this record
        # The disk that stopped the run may refuse this too; the lock must still go.
        with contextlib.suppress(OSError):
            run_folder.write_metrics(trainer.default_root_dir, record)
        for logger in wandb_loggers(trainer):
            logger.experiment.summary.update({"status": status, "error": reason})
            finish_wandb(logger, exit_code=1)
        run_folder.release_lock(trainer.default_root_dir)
        print(f"run folder: {trainer.default_root_dir}", flush=True)


class KeepWeights(Callback):
    """The trained weights in the run folder (`weights.ckpt`, weights and buffers only: the
    training images and final loss travel with them), at the end of training or, for an
    interrupted run, where it stopped. `enabled` = False keeps none (huge grids)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def _save(self, trainer: Trainer) -> None:
        if self.enabled:
            path = Path(trainer.default_root_dir) / run_folder.WEIGHTS
            if not trainer.is_global_zero:  # a collective call; only rank 0 writes
                trainer.save_checkpoint(path, weights_only=True)
                return
            with atomic_path(path) as tmp:  # no half-written weights on a full disk or a kill
                trainer.save_checkpoint(tmp, weights_only=True)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After the module's on_train_end, which measures the final loss the weights carry.
        self._save(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, error: BaseException):
        if isinstance(error, KeyboardInterrupt | SystemExit) and trainer.state.fn == "fit":
            self._save(trainer)
