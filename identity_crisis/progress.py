"""Progress of a training run, for a person at a terminal and for a log file.

At a terminal: one bar for training, whose total is `max_steps` only when the run will go that far
(a run with a stop rule ends when the loss is low enough, usually long before); no bars for the
seven test sets, which take a second. Off a terminal (nohup, SLURM logs, the sweep runner's cell
logs): a line about every 30 s with the step, the loss, the speed and the time so far.
"""

from __future__ import annotations

import math
import sys
import time

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from identity_crisis.verdict import clock

EVERY_S = 30.0


def may_stop_early(trainer: Trainer, module: LightningModule) -> bool:
    """Whether the module's stop rule can end training before `max_steps`."""
    stop_loss = getattr(module.hparams, "stop_loss", None)
    return stop_loss is not None and (trainer.min_steps or 0) < trainer.max_steps


def stop_rule(trainer: Trainer, module: LightningModule) -> str:
    """'at least 1500 steps, then until the training MSE < 0.0001, at most 12000' in words."""
    if not may_stop_early(trainer, module):
        return f"{trainer.max_steps} steps"
    least = f"at least {trainer.min_steps} steps, then " if trainer.min_steps else ""
    stop_loss = module.hparams.stop_loss
    return f"{least}until the training MSE < {stop_loss:g}, at most {trainer.max_steps} steps"


class StepBar(TQDMProgressBar):
    """Lightning's bar counting optimizer steps, with a true total (none under a stop rule), no
    `v_num` and no test bars.

    Lightning's own bar counts `training_step` calls, and one call here runs many optimizer steps
    (`IdentityTaskModule.steps_per_call`): its position, rate and ETA would be off by that factor.
    """

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.total = None if may_stop_early(trainer, pl_module) else trainer.max_steps
        bar.unit = "step"
        bar.set_description(f"training ({stop_rule(trainer, pl_module)})")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        bar.update(trainer.global_step - bar.n)
        bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict:
        # The logger's version is a W&B run id here, which says nothing at a terminal.
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def init_test_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)


class ProgressLines(Callback):
    """Off a terminal: 'step 1200  loss 3.1e-04  41.2 steps/s  elapsed 0:29' every `every_s`
    seconds. Silent when a progress bar is shown (a terminal has the bar)."""

    def __init__(self, every_s: float = EVERY_S, stream=None):
        self.every_s = every_s
        self.stream = stream
        self.active = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.active = trainer.progress_bar_callback is None and trainer.is_global_zero
        self.start = self.last = time.monotonic()
        self.start_step = trainer.global_step
        if self.active:
            self._say(f"training: {stop_rule(trainer, pl_module)}")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_) -> None:
        if not self.active:
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._say(self.line(trainer, pl_module, now))

    def line(self, trainer: Trainer, pl_module: LightningModule, now: float) -> str:
        elapsed = now - self.start
        rate = (trainer.global_step - self.start_step) / max(elapsed, 1e-9)
        # The loss of the last check (every check_every steps): reading the current one would
        # wait for the device at every step.
        loss = getattr(pl_module, "last_loss", None)
        loss_text = f"  loss {loss:.2e}" if loss is not None and math.isfinite(loss) else ""
        return (
            f"step {trainer.global_step}/{trainer.max_steps}{loss_text}  {rate:.1f} steps/s  "
            f"elapsed {clock(elapsed)}"
        )

    def _say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)


def use_step_bar(trainer: Trainer) -> None:
    """Put StepBar in place of Lightning's default bar (which the Trainer adds itself when
    `enable_progress_bar` is on, so it cannot be passed as a default callback)."""
    callbacks = trainer.callbacks
    for i, callback in enumerate(callbacks):
        if type(callback) is TQDMProgressBar:
            callbacks[i] = StepBar(
                refresh_rate=callback.refresh_rate, process_position=callback.process_position
            )
