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


class _Canvas:
    """What every pattern drawer needs: the pixel coordinates of a size x size image, the scale
    from the 28x28 geometry, and the parameter picker (generator None = the canonical values)."""

    def __init__(self, size: int, generator: torch.Generator | None) -> None:
        self.size = size
        self.generator = generator
        self.scale = size / 28
        self.yy, self.xx = torch.meshgrid(
            torch.arange(size, dtype=torch.float32),
            torch.arange(size, dtype=torch.float32),
            indexing="ij",
        )
        self.centre = (size - 1) / 2
        self.jitter = 2 * self.scale

    def pixels(self, v: float, lo: int = 1) -> int:
        """A length of `v` pixels at 28x28, scaled to this size and rounded, at least `lo`."""
        # Lower bounds keep small images from degenerating into constant images.
        return max(lo, round(v * self.scale))

    def pick_int(self, canon: int, lo: int, hi: int) -> int:
        """`canon` for the canonical pattern, else uniform in [lo, hi] (both included)."""
        if self.generator is None:
            return canon
        return int(torch.randint(lo, hi + 1, (1,), generator=self.generator))

    def pick_float(self, canon: float, lo: float, hi: float) -> float:
        """`canon` for the canonical pattern, else uniform in [lo, hi)."""
        if self.generator is None:
            return canon
        return lo + (hi - lo) * float(torch.rand(1, generator=self.generator))

    def pick_centre(self) -> tuple[float, float]:
        """(y, x) of a shape's centre: the image centre, jittered by up to 2 px (at 28x28)."""
        c, jitter = self.centre, self.jitter
        y = self.pick_float(c, c - jitter, c + jitter)
        x = self.pick_float(c, c - jitter, c + jitter)
        return y, x


def _square(canvas: _Canvas) -> torch.Tensor:
    side = canvas.pick_int(canvas.pixels(7), canvas.pixels(4, 2), canvas.pixels(12, 2))
    top = canvas.pick_int((canvas.size - side) // 2, 0, canvas.size - side)
    left = canvas.pick_int((canvas.size - side) // 2, 0, canvas.size - side)
    return (
        (canvas.yy >= top)
        & (canvas.yy < top + side)
        & (canvas.xx >= left)
        & (canvas.xx < left + side)
    )


def _fine_stripes(canvas: _Canvas) -> torch.Tensor:
    # Always 1 px wide: the point of this pattern is the highest possible frequency.
    phase = canvas.pick_int(0, 0, 1)
    return (canvas.xx + phase) % 2 == 0


def _coarse_stripes(canvas: _Canvas) -> torch.Tensor:
    period = canvas.pick_int(canvas.pixels(10, 3), canvas.pixels(8, 3), canvas.pixels(12, 3))
    phase = canvas.pick_int(0, 0, period - 1)
    return (canvas.xx + phase) % period < period / 2


def _ramp(canvas: _Canvas) -> torch.Tensor:
    direction = canvas.pick_int(0, 0, 2)
    last = canvas.size - 1
    return [canvas.xx / last, 1 - canvas.xx / last, canvas.yy / last][direction]


def _dot_lattice(canvas: _Canvas) -> torch.Tensor:
    period = canvas.pick_int(canvas.pixels(4, 2), canvas.pixels(3, 2), canvas.pixels(6, 2))
    dot = max(1, round(0.4 * period))
    # Canonical offset centres the lattice so both borders look alike.
    oy = canvas.pick_int((period - dot) // 2, 0, period - 1)
    ox = canvas.pick_int((period - dot) // 2, 0, period - 1)
    return ((canvas.yy - oy) % period < dot) & ((canvas.xx - ox) % period < dot)


def _crescent_disk(canvas: _Canvas) -> torch.Tensor:
    yy, xx, s = canvas.yy, canvas.xx, canvas.scale
    cy, cx = canvas.pick_centre()
    radius = canvas.pick_float(11.5 * s, 10 * s, 12.5 * s)
    angle = canvas.pick_float(0.0, 0.0, 2 * math.pi)
    # A grey disk with an equal, shifted disk cut out of it leaves a crescent.
    inner, shift = 0.7 * radius, 0.35 * radius
    sy, sx = cy + shift * math.sin(angle), cx + shift * math.cos(angle)
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    grey = (yy - cy) ** 2 + (xx - cx) ** 2 <= inner**2
    cut = (yy - sy) ** 2 + (xx - sx) ** 2 <= inner**2
    return disk.float() - 0.5 * (grey & ~cut).float()


def _ellipse(canvas: _Canvas) -> torch.Tensor:
    s = canvas.scale
    cy, cx = canvas.pick_centre()
    a = canvas.pick_float(12 * s, 10 * s, 13 * s)
    b = canvas.pick_float(7 * s, 5 * s, 8 * s)
    return ((canvas.xx - cx) / a) ** 2 + ((canvas.yy - cy) / b) ** 2 <= 1


def _noise_generator(canvas: _Canvas) -> torch.Generator:
    # A private generator keeps the canonical noise fixed and the global RNG untouched.
    return canvas.generator if canvas.generator is not None else torch.Generator().manual_seed(0)


def _gaussian_noise(canvas: _Canvas) -> torch.Tensor:
    noise = torch.randn(canvas.size, canvas.size, generator=_noise_generator(canvas))
    return (0.5 + 0.25 * noise).clamp(0, 1)


def _uniform_noise(canvas: _Canvas) -> torch.Tensor:
    return torch.rand(canvas.size, canvas.size, generator=_noise_generator(canvas))


def _checkerboard(canvas: _Canvas) -> torch.Tensor:
    cell = canvas.pick_int(canvas.pixels(4), canvas.pixels(2), canvas.pixels(7))
    oy, ox = canvas.pick_int(0, 0, cell - 1), canvas.pick_int(0, 0, cell - 1)
    return ((canvas.yy + oy) // cell + (canvas.xx + ox) // cell) % 2 == 1


# One drawer per kind of ALL_KINDS: a bool or float image from a _Canvas.
_DRAWERS = {
    "square": _square,
    "fine_stripes": _fine_stripes,
    "coarse_stripes": _coarse_stripes,
    "ramp": _ramp,
    "dot_lattice": _dot_lattice,
    "crescent_disk": _crescent_disk,
    "ellipse": _ellipse,
    "gaussian_noise": _gaussian_noise,
    "uniform_noise": _uniform_noise,
    "checkerboard": _checkerboard,
}


def _draw(kind: str, size: int, g: torch.Generator | None) -> torch.Tensor:
    """Draw one pattern; g=None gives the canonical version, otherwise parameters are sampled."""
    return _DRAWERS[kind](_Canvas(size, g)).to(torch.float32).contiguous()


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
