"""Whether a module may step its optimizer without Lightning's per-step hook dispatch.

With one image and a full batch a step of a small net is a millisecond or less, and Lightning's
`manual_backward` and `LightningOptimizer.step` spend a few tenths of one dispatching hooks
(`on_before_backward`, `on_after_backward`, `on_before_optimizer_step`, ...) to every callback and
the module, each under a profiler section. When nothing would run in those hooks, skipping the
dispatch changes nothing but the time; the step still goes through Lightning's own progress
counting, so `global_step`, `max_steps` and logging keep their meaning. Any hook a callback or the
module overrides, a profiler, a precision plugin or a multi-device strategy brings the full path
back, so no user code is ever skipped.
"""

from __future__ import annotations

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden

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
