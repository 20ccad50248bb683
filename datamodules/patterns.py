"""Synthetic probe images for the Identity Crisis reproduction (Zhang et al. 2020).

Holds the patterns of the paper's figure 3 (square, stripes, ramp, dots, crescent-in-disk,
ellipse) plus noise and checkerboard images, as fixed canonical versions for the probe panel
and as seeded random variations for larger probe sets. Images are float32 in [0, 1] with a
black (0) background; geometry is specified for 28x28 and scaled proportionally for other sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

PATTERN_KINDS: tuple[str, ...] = (
    "square",
    "fine_stripes",
    "coarse_stripes",
    "ramp",
    "dot_lattice",
    "crescent_disk",
    "ellipse",
)
NOISE_KINDS: tuple[str, ...] = ("gaussian_noise", "uniform_noise", "checkerboard")
ALL_KINDS: tuple[str, ...] = PATTERN_KINDS + NOISE_KINDS

MIN_SIZE = 8


def _check(kind: str, size: int) -> None:
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown pattern kind {kind!r}; valid kinds: {', '.join(ALL_KINDS)}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")


def _draw(kind: str, size: int, g: torch.Generator | None) -> torch.Tensor:
    """Draw one pattern; g=None gives the canonical version, otherwise parameters are sampled."""
    s = size / 28

    def px(v: float, lo: int = 1) -> int:
        # Lower bounds keep small images from degenerating into constant images.
        return max(lo, round(v * s))

    def pick_int(canon: int, lo: int, hi: int) -> int:
        if g is None:
            return canon
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    def pick_float(canon: float, lo: float, hi: float) -> float:
        if g is None:
            return canon
        return lo + (hi - lo) * float(torch.rand(1, generator=g))

    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    c = (size - 1) / 2
    jitter = 2 * s

    if kind == "square":
        side = pick_int(px(7), px(4, 2), px(12, 2))
        top = pick_int((size - side) // 2, 0, size - side)
        left = pick_int((size - side) // 2, 0, size - side)
        img = (yy >= top) & (yy < top + side) & (xx >= left) & (xx < left + side)
    elif kind == "fine_stripes":
        # Always 1 px wide: the point of this pattern is the highest possible frequency.
        phase = pick_int(0, 0, 1)
        img = (xx + phase) % 2 == 0
    elif kind == "coarse_stripes":
        period = pick_int(px(10, 3), px(8, 3), px(12, 3))
        phase = pick_int(0, 0, period - 1)
        img = (xx + phase) % period < period / 2
    elif kind == "ramp":
        direction = pick_int(0, 0, 2)
        img = [xx / (size - 1), 1 - xx / (size - 1), yy / (size - 1)][direction]
    elif kind == "dot_lattice":
        period = pick_int(px(4, 2), px(3, 2), px(6, 2))
        dot = max(1, round(0.4 * period))
        # Canonical offset centres the lattice so both borders look alike.
        oy = pick_int((period - dot) // 2, 0, period - 1)
        ox = pick_int((period - dot) // 2, 0, period - 1)
        img = ((yy - oy) % period < dot) & ((xx - ox) % period < dot)
    elif kind == "crescent_disk":
        cy, cx = pick_float(c, c - jitter, c + jitter), pick_float(c, c - jitter, c + jitter)
        radius = pick_float(11.5 * s, 10 * s, 12.5 * s)
        angle = pick_float(0.0, 0.0, 2 * math.pi)
        # A grey disk with an equal, shifted disk cut out of it leaves a crescent.
        inner, shift = 0.7 * radius, 0.35 * radius
        sy, sx = cy + shift * math.sin(angle), cx + shift * math.cos(angle)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        grey = (yy - cy) ** 2 + (xx - cx) ** 2 <= inner**2
        cut = (yy - sy) ** 2 + (xx - sx) ** 2 <= inner**2
        img = disk.float() - 0.5 * (grey & ~cut).float()
    elif kind == "ellipse":
        cy, cx = pick_float(c, c - jitter, c + jitter), pick_float(c, c - jitter, c + jitter)
        a = pick_float(12 * s, 10 * s, 13 * s)
        b = pick_float(7 * s, 5 * s, 8 * s)
        img = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1
    elif kind in ("gaussian_noise", "uniform_noise"):
        # A private generator keeps the canonical noise fixed and the global RNG untouched.
        gen = g if g is not None else torch.Generator().manual_seed(0)
        if kind == "gaussian_noise":
            img = (0.5 + 0.25 * torch.randn(size, size, generator=gen)).clamp(0, 1)
        else:
            img = torch.rand(size, size, generator=gen)
    else:  # checkerboard
        cell = pick_int(px(4), px(2), px(7))
        oy, ox = pick_int(0, 0, cell - 1), pick_int(0, 0, cell - 1)
        img = ((yy + oy) // cell + (xx + ox) // cell) % 2 == 1
    return img.to(torch.float32).contiguous()


def canonical_pattern(kind: str, size: int = 28) -> torch.Tensor:
    """The fixed version of a paper pattern used in the probe panel.

    Returns a float32 tensor (size, size) in [0, 1]; the noise kinds use a generator seeded 0.
    """
    _check(kind, size)
    return _draw(kind, size, None)


def random_pattern(kind: str, generator: torch.Generator, size: int = 28) -> torch.Tensor:
    """A seeded variation of one kind in PATTERN_KINDS + NOISE_KINDS.

    Position, size, period, phase, ramp orientation (left-right, right-left, top-bottom) etc.
    are drawn from `generator`. Returns a float32 tensor (size, size) in [0, 1].
    """
    _check(kind, size)
    return _draw(kind, size, generator)


def pattern_set(kinds: Sequence[str], count: int, seed: int, size: int = 28) -> torch.Tensor:
    """`count` random images as a float32 tensor (count, 1, size, size).

    Image i has kind kinds[i % len(kinds)]. All images come from one torch.Generator seeded
    with `seed`, so the set is deterministic and torch's global RNG is left untouched.
    """
    if isinstance(kinds, str):
        kinds = (kinds,)
    if len(kinds) == 0:
        raise ValueError(f"kinds must not be empty; valid kinds: {', '.join(ALL_KINDS)}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    for kind in kinds:
        _check(kind, size)
    g = torch.Generator().manual_seed(seed)
    images = [random_pattern(kinds[i % len(kinds)], g, size) for i in range(count)]
    return torch.stack(images).unsqueeze(1)
