"""Third-party lines a normal run does not need, removed one known message at a time.

Every filter names the exact message it drops; nothing else from Lightning, W&B or Python's
warnings is hidden, so a new warning still shows. What these lines said is said by the run
itself: its name, the scores table, the `wandb sync` line and the run folder.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

import wandb
from pytorch_lightning import Callback
from pytorch_lightning.loggers import WandbLogger

from identity_crisis.private_api import drop_unset_anonymous

# Lightning's start-up and stop notes (logged at INFO by its rank-zero helpers).
LIGHTNING_NOTES = re.compile(
    r"^(\[rank: \d+\] )?Seed set to \d+"
    r"|^(GPU|TPU|HPU|IPU) available: "
    r"|^💡 Tip: .*litlogger"
    r"|^`Trainer\.(fit|test)` stopped: `max_steps=\d+` reached\.$"
    # DDP's start-up banners, once per process: the run prints its own name and process count.
    r"|^Initializing distributed: GLOBAL_RANK: \d+, MEMBER: \d+/\d+$"
    r"|^-+\ndistributed_backend=\w+\nAll distributed processes registered\. Starting with \d+ "
    r"processes\n-+\n?$"
)
LIGHTNING_LOGGERS = (
    "lightning_fabric.utilities.seed",
    "lightning_fabric.utilities.distributed",
    "lightning_fabric.utilities.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
# torch renamed a pytree class; Lightning 2.6 still uses the old name (nothing to act on here).
WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


class _DropNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not LIGHTNING_NOTES.search(record.getMessage())


_FILTER = _DropNotes()


def silence_third_party() -> None:
    """Install the filters (idempotent). Call once at the start of a command.

    W&B's info lines (its offline banner, where it saves, how to view) go too: the run prints the
    `wandb sync` line or the run's link itself. W&B reads this setting only from its global setup,
    hence the variable; WANDB_SHOW_INFO=true in the shell brings them back. Its warnings and
    errors always show."""
    os.environ.setdefault("WANDB_SHOW_INFO", "false")
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)


class QuietProcesses(Callback):
    """The same filters in every process of a run: a DDP spawn worker is a fresh interpreter,
    which unpickles the Trainer's callbacks (this one included) before its first log line."""

    def __init__(self):
        # Pickle skips __setstate__ for an object with no state: keep one.
        self.filters_installed_on_load = True

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        silence_third_party()

    def setup(self, trainer, pl_module, stage: str) -> None:
        silence_third_party()


class QuietWandbLogger(WandbLogger):
    """WandbLogger without its `anonymous=None` init argument (see identity_crisis.private_api)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        drop_unset_anonymous(self)

    def __getstate__(self) -> dict:
        # A spawn launcher pickles the logger once per fit and test; Lightning then calls
        # wandb.require("service"), a no-op since W&B 0.18 that warns every time.
        require = wandb.require
        wandb.require = _skip_service(require)
        try:
            return super().__getstate__()
        finally:
            wandb.require = require


def _skip_service(require):
    def checked(features):
        if features != "service":
            require(features)

    return checked
