"""Whether a module may step its optimizer without Lightning's per-step hook dispatch.

With one image and a full batch a step of a small net is a millisecond or less, and Lightning's
`manual_backward` and `LightningOptimizer.step` spend a few tenths of one dispatching hooks
(`on_before_backward`, `on_after_backward`, `on_before_optimizer_step`, ...) to every callback and
the module, each under a profiler section. When nothing would run in those hooks, skipping the
dispatch changes nothing but the time; the step still goes through Lightning's own progress
counting, so `global_step`, `max_steps` and logging keep their meaning. Any hook a callback or the
module overrides, a profiler, a precision plugin or a multi-device strategy brings the full path
back, so no user code is ever skipped. `cheap_cuda_checks` takes a cost out of the optimizer
step that importing Lightning puts there on a CUDA build running on the CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden

# LightningOptimizer's progress counting around a step (`global_step`, `max_steps` and logging
# read it). Private names, used only here: `bare_step` is the one place they are called, and
# tests/test_models.py fails naming them if a Lightning release drops them.
PROGRESS_CALLS = ("_on_before_step", "_on_after_step")


def bare_step(optimizer) -> None:
    """One optimizer step of a `LightningOptimizer` without its hook dispatch, still counted by
    Lightning's progress tracking: the step `optimizer.step()` takes when nothing would run in
    its hooks. The caller has already run `loss.backward()`."""
    before, after = (getattr(optimizer, name) for name in PROGRESS_CALLS)
    before()
    optimizer.optimizer.step()
    after()


# The hooks `manual_backward` and `LightningOptimizer.step` dispatch on every step.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def hooks_in_the_way(trainer: Trainer, module: LightningModule) -> list[str]:
    """What would run inside a step's hooks, as 'Owner.hook'; empty when the bare path is exact."""
    found = [
        f"{type(callback).__name__}.{hook}"
        for callback in trainer.callbacks
        for hook in STEP_HOOKS
        if is_overridden(hook, callback, parent=Callback)
    ]
    found += [
        f"{type(module).__name__}.{hook}"
        for hook in (*STEP_HOOKS, "backward")
        if is_overridden(hook, module, parent=LightningModule)
    ]
    if type(trainer.strategy) is not SingleDeviceStrategy:
        found.append(f"strategy {type(trainer.strategy).__name__}")
    if type(trainer.precision_plugin) is not Precision:
        found.append(f"precision {type(trainer.precision_plugin).__name__}")
    if not isinstance(trainer.profiler, PassThroughProfiler):
        found.append(f"profiler {type(trainer.profiler).__name__}")
    return found


# lightning_fabric sets this at import so that asking whether CUDA is available never initialises
# CUDA (which would break forked children that use it). With it set and CUDA not initialised, a
# CUDA build of torch loads NVML (ctypes.CDLL) at every Adam/AdamW step, in the optimizer's
# graph-capture check: about 0.1-0.2 ms a step here, as long as a 1-layer net's whole step.
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


@contextlib.contextmanager
def cheap_cuda_checks(device: torch.device) -> Iterator[None]:
    """While training on the CPU, torch's own availability check instead of NVML's: a plain
    PyTorch loop's step. Nothing forks inside a training step, and a run on a GPU (CUDA
    initialised, the count cached) is left as it is."""
    if device.type != "cpu" or torch.cuda.is_initialized() or os.environ.get(NVML_CHECK) != "1":
        yield
        return
    os.environ[NVML_CHECK] = "0"
    try:
        yield
    finally:
        os.environ[NVML_CHECK] = "1"
