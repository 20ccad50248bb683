"""The one private name of another library the app still touches, kept here with why.

Lightning's WandbLogger always hands `wandb.init` an `anonymous=None` argument, and W&B (since
0.19) warns that the setting "has no effect" whenever the key is passed at all, even as None. No
public setting of either drops that one warning (W&B prints it with click, not through Python's
warnings or logging, and silencing W&B's warnings would hide the ones that matter), so the key is
taken out of the logger's stored init arguments. tests/test_private_api.py fails loudly when a
Lightning release renames the attribute or stops passing the key.
"""

from __future__ import annotations

from pytorch_lightning.loggers import WandbLogger

WANDB_INIT_ARGS = "_wandb_init"  # WandbLogger's stored keyword arguments for wandb.init


def drop_unset_anonymous(logger: WandbLogger) -> None:
    """Leave `anonymous` out of the logger's `wandb.init` arguments when it is None (unset)."""
    init_args = getattr(logger, WANDB_INIT_ARGS)
    if init_args.get("anonymous") is None:
        init_args.pop("anonymous", None)
