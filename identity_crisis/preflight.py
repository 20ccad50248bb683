"""Checks made before a run starts: before its run folder or W&B run exists, so a bad setting
costs nothing and leaves nothing behind. Each raises ConfigError with one line that names the
value and what would be valid; the command line prints it and exits 2."""

from __future__ import annotations

import importlib
import math
import os
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


# numpy's seed range, which Lightning's seed_everything enforces with a traceback.
SEED_MAX = 2**32 - 1


def check_seed(seed, option: str = "--seed_everything") -> None:
    """A seed numpy accepts; `true` (a random seed) and `false` (none) are Lightning's too."""
    if isinstance(seed, bool) or seed is None:
        return
    if not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(
            f"{option}={seed} is not valid; it must be an integer from 0 to {SEED_MAX}"
        )


def check_folder_name(option: str, value: str | None) -> None:
    """A name that becomes one folder under the run root: a single path component, so a run is
    never written beside or above the root it was sent to."""
    if value is None:
        return
    if not value.strip() or value in (".", "..") or "/" in value or os.sep in value:
        raise ConfigError(
            f"{option}={value!r} is not valid; it must be a non-empty folder name without '/' "
            "(not '.' or '..'), so the run stays inside --run.root"
        )


def check_non_empty_path(option: str, value) -> None:
    """An empty folder option would quietly mean the current folder."""
    if value is not None and not str(value).strip():
        raise ConfigError(f"{option}={value!r} is not valid; give a folder (e.g. runs)")


def image_count(test_sets, test_size: int, test_sizes: dict | None) -> int:
    """Images the test sets hold in memory; a folder set holds its own files, counted elsewhere."""
    sizes = dict(test_sizes or {})
    return sum(sizes.get(name, test_size) for name in dict.fromkeys(test_sets) if name != "folder")


def check_test_sets(test_sets) -> None:
    if not list(test_sets or []):
        raise ConfigError(
            "--data.test_sets=[] is not valid; name at least one test set, e.g. [mnist] "
            "(the default is every built-in set)"
        )


def check_image_memory(what: str, option: str, count: int, shape, copies: int = 4) -> int:
    """Refuse `count` images of `shape` that do not fit in this machine's memory (the data module
    builds test sets on the CPU whatever the accelerator): a huge test size would otherwise
    page and build patterns for hours before failing. `copies`: inputs, outputs and the working
    copies scoring makes."""
    pixels = math.prod(shape)
    needed = count * pixels * BYTES * copies
    free, where = available_memory("cpu")
    if needed > free:
        raise ConfigError(
            f"{option} is too large: {what}, {count:,} images of "
            f"{'x'.join(map(str, shape))} in all, need about {needed / 2**30:.1f} GiB, but "
            f"{free / 2**30:.1f} GiB is {where}; use a smaller {option.split('=')[0]}"
        )
    return needed


def check_run_config(config) -> None:
    """The cheap checks of a parsed `fit`/`test` config (a jsonargparse Namespace), made even
    when the sweep runner only parses its cells' command lines."""
    check_seed(config.seed_everything)
    check_test_sets(config.data.test_sets)
    check_non_empty_path("--run.root", config.run.root)
    check_non_empty_path("--run.dir", config.run.dir)
    check_folder_name("--run.name", config.run.name)
    check_folder_name("--run.group", config.run.group)


def check_data_memory(data) -> None:
    """The test sets a data config (`config.data`) asks for fit in memory."""
    from datamodules.sources import NATIVE_SHAPES

    count = image_count(data.test_sets, data.test_size, data.test_sizes)
    sets = len([name for name in dict.fromkeys(data.test_sets) if name != "folder"])
    check_image_memory(
        f"{sets} test set{'s' if sets != 1 else ''}",
        f"--data.test_size={data.test_size}",
        count,
        NATIVE_SHAPES.get(data.train_dataset, (3, 32, 32)),
    )


def check_forward_memory(
    class_path: str, init_args: dict, images: int, shape, width: int, what: str
) -> int:
    """Refuse a net that cannot even run forward here: its weights, plus two feature maps of
    `width` channels for each of `images` inputs (a layer's input and its output)."""
    try:
        params = parameter_count(class_path, init_args)
    except (RuntimeError, OverflowError, ValueError) as error:
        raise ConfigError(f"{what} is too large to build ({error})") from None
    needed = (params + 2 * images * width * math.prod(shape[1:])) * BYTES
    free, where = available_memory("cpu")
    if needed > free:
        raise ConfigError(
            f"{what} needs about {needed / 2**30:.1f} GiB ({params:,} parameters), but "
            f"{free / 2**30:.1f} GiB is {where}"
        )
    return needed


# Hyperparameters that shape training or scoring, not the trained net: a re-probe may set them
# differently from the run that trained the weights.
TRAINING_ONLY_KEYS = {
    "optimizer",
    "lr",
    "momentum",
    "warmup_steps",
    "init",
    "init_gain",
    "fit_threshold",
    "stop_loss",
    "check_every",
    "verdict_threshold",
    "image_shape",
    "test_set_names",
}


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def check_checkpoint(path, class_path: str, init_args: dict) -> dict:
    """A checkpoint `test` can load into the net `--config` describes: readable, with weights,
    of the same model family and the same architecture. Returns its hyperparameters."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises a different type for each kind of bad file
        raise ConfigError(
            f"--ckpt_path={path} cannot be read as a checkpoint ({_first_line(error)}); give a "
            "run's weights.ckpt"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(
            f"--ckpt_path={path} holds no trained weights (no state_dict); give a run's "
            "weights.ckpt"
        )
    saved = checkpoint.get("hyper_parameters") or {}
    saved_class = str(saved.get("_class_path", "")).rsplit(".", 1)[-1]
    asked_class = class_path.rsplit(".", 1)[-1]
    if saved_class and asked_class and saved_class != asked_class:
        raise ConfigError(
            f"--ckpt_path={path} holds a {saved_class}, but the config's model is {asked_class}; "
            f"give the --config the run was trained with (its config.yaml)"
        )
    for key, value in init_args.items():
        if key in TRAINING_ONLY_KEYS or key not in saved:
            continue
        if _same(saved[key], value):
            continue
        raise ConfigError(
            f"--ckpt_path={path} was trained with model.{key}={saved[key]!r}, but the config "
            f"gives model.{key}={value!r}; give the --config the run was trained with (its "
            f"config.yaml) or --model.{key}={saved[key]}"
        )
    return saved


def _same(a, b) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b
