"""Checks made before a run starts: before its run folder or W&B run exists, so a bad setting
costs nothing and leaves nothing behind. Each raises ConfigError with one line that names the
value and what would be valid; the command line prints it and exits 2."""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path

import torch

from identity_crisis.errors import ConfigError

# Bytes per parameter while training: the weights, their gradients and the optimizer's state
# (Adam: two running averages; AMSGrad: three; SGD with momentum: one), float32 each. The
# activations of one image are small beside the weights of these nets.
OPTIMIZER_STATES = {"adam": 2, "amsgrad": 3, "sgd": 1}
BYTES = 4


def check_steps(max_steps: int | None, min_steps: int | None) -> None:
    for name, value in (("max_steps", max_steps), ("min_steps", min_steps)):
        if value is not None and value < 0:
            raise ConfigError(f"--trainer.{name}={value} is not valid; it must be >= 0")


def check_writable(path: Path, what: str) -> None:
    """`path` can be created and written: its nearest existing ancestor is a writable folder."""
    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    # A real try, removed at once: permission bits do not tell (root passes every access check,
    # and /proc or a read-only mount still refuse).
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        shutil.rmtree(tempfile.mkdtemp(dir=existing, prefix=".idc-write-check-"))
    except OSError as error:
        raise ConfigError(f"{what} {path} cannot be written: {error}") from None


def parameter_count(class_path: str, init_args: dict) -> int:
    """The parameters of the model the config describes, counted on PyTorch's meta device:
    nothing is allocated, so a net too large for the machine is measured, not built."""
    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    with torch.device("meta"):
        model = cls(**init_args)
    return sum(p.numel() for p in model.parameters())


def available_memory(accelerator: str) -> tuple[int, str]:
    """(bytes, where) the run may use: the GPU's free memory, else the machine's available."""
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "free on the GPU"
    try:
        with open("/proc/meminfo") as info:
            fields = dict(line.split(":", 1) for line in info)
        return int(fields["MemAvailable"].split()[0]) * 1024, "available on this machine"
    except (OSError, KeyError, ValueError):
        return 2**62, "available"  # unknown: do not refuse


def check_memory(class_path: str, init_args: dict, accelerator: str) -> int:
    """Refuse a model whose weights, gradients and optimizer state do not fit; returns bytes."""
    try:
        params = parameter_count(class_path, init_args)
    except (RuntimeError, OverflowError) as error:  # a size beyond what torch can address
        raise ConfigError(
            f"the model is too large to build ({error}); use fewer channels, width or depth"
        ) from None
    optimizer = init_args.get("optimizer", "adam")
    needed = params * BYTES * (2 + OPTIMIZER_STATES.get(optimizer, 2))
    free, where = available_memory(accelerator)
    if needed > free:
        raise ConfigError(
            f"the model has {params:,} parameters: training it with {optimizer} needs about "
            f"{needed / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB is {where}; use fewer "
            f"channels, width or depth"
        )
    return needed


def check_output_folder(out: Path, marker: str, what: str, replace: bool) -> None:
    """An output folder (`report --out`, `theory --out`) is never written over silently: one that
    holds an earlier `what` (its `marker` file) is refused unless `replace`; it must be
    writable."""
    out = Path(out)
    if (out / marker).exists() and not replace:
        raise ConfigError(
            f"--out {out} already holds a {what} ({marker}); pass --replace to write over it, "
            f"or choose another --out"
        )
    check_writable(out, "--out")
