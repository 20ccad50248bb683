"""Where the offline runner's cells run: the CPUs and GPUs this process may use."""

from __future__ import annotations

import os

from identity_crisis.errors import ConfigError


def usable_cpus() -> int:
    """The CPUs this process may run on (a SLURM job's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPU ids a cell can be pinned to: CUDA_VISIBLE_DEVICES' entries when it is set (a
    SLURM job's GPUs), else 0..n-1 for the n GPUs torch sees; [] without a usable GPU."""
    import torch

    count = torch.cuda.device_count()
    if not count:
        return []
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    listed = [g for g in listed if g]
    return listed[:count] if listed else [str(i) for i in range(count)]


def choose_gpus(asked: str | None, workers: int | None) -> list[str]:
    """--gpus: unset, every visible GPU (none: CPU workers; --workers alone means CPU); `none`,
    CPU; a list of ids, those, each checked against the GPUs this process can see."""
    if asked is None:
        return [] if workers else visible_gpus()
    if asked.strip().lower() in ("", "none", "cpu"):
        return []
    ids = [g.strip() for g in asked.split(",") if g.strip()]
    visible = visible_gpus()
    wrong = [g for g in ids if g not in visible]
    if wrong:
        seen = ", ".join(visible) if visible else "none (torch sees no GPU)"
        raise ConfigError(
            f"--gpus {asked}: no GPU {', '.join(wrong)} here; visible GPUs: {seen}. Leave --gpus "
            "out for every visible GPU (CPU workers without one), or use --gpus none for CPU"
        )
    return ids
