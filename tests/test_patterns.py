import pytest
import torch

from datamodules.patterns import (
    NOISE_KINDS,
    PATTERN_KINDS,
    canonical_pattern,
    pattern_set,
    random_pattern,
)

ALL = PATTERN_KINDS + NOISE_KINDS


def _period(line: torch.Tensor) -> int:
    """Smallest shift p for which the 1-D sequence repeats itself."""
    for p in range(1, len(line)):
        if torch.equal(line[p:], line[:-p]):
            return p
    return len(line)


def _white_box(img: torch.Tensor) -> tuple[int, int, int, int]:
    rows = torch.nonzero(img.eq(1).any(1)).flatten()
    cols = torch.nonzero(img.eq(1).any(0)).flatten()
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _is_binary(img: torch.Tensor) -> bool:
    return bool(((img == 0) | (img == 1)).all())


def _check_basic(img: torch.Tensor, size: int) -> None:
    assert img.shape == (size, size)
    assert img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 1
    assert img.var() > 0


def test_kind_lists():
    assert len(PATTERN_KINDS) == 7 and len(NOISE_KINDS) == 3
    assert len(set(ALL)) == 10


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("kind", ALL)
def test_canonical_and_random_are_valid_images(kind, size):
    _check_basic(canonical_pattern(kind, size), size)
    g = torch.Generator().manual_seed(1)
    images = [random_pattern(kind, g, size) for _ in range(20)]
    for img in images:
        _check_basic(img, size)
    # Variation must really vary (fine stripes only have two phases, so 20 draws suffice).
    assert len({tuple(img.flatten().tolist()) for img in images}) >= 2


def test_square():
    img = canonical_pattern("square")
    assert _is_binary(img)
    assert img.sum() == 49
    top, bottom, left, right = _white_box(img)
    assert (bottom - top + 1) * (right - left + 1) == 49  # filled 7x7 block, hence connected
    assert abs((top + bottom) / 2 - 13.5) <= 1 and abs((left + right) / 2 - 13.5) <= 1


def test_fine_stripes_alternate_by_column():
    img = canonical_pattern("fine_stripes")
    assert torch.equal(img, img[:1].expand(28, 28))  # vertical: every row identical
    row = img[0]
    assert torch.equal(row[1:], 1 - row[:-1])


def test_coarse_stripes():
    img = canonical_pattern("coarse_stripes")
    assert _is_binary(img)
    assert torch.equal(img, img[:1].expand(28, 28))
    assert 9 <= _period(img[0]) <= 10
    assert 0.4 <= img.mean() <= 0.6


def test_ramp_is_linear_left_to_right():
    img = canonical_pattern("ramp")
    assert torch.equal(img, img[:1].expand(28, 28))
    row = img[0]
    assert row[0] == 0 and row[-1] == 1
    steps = row[1:] - row[:-1]
    assert (steps > 0).all()
    assert torch.allclose(steps, torch.full_like(steps, 1 / 27), atol=1e-6)


def test_dot_lattice():
    img = canonical_pattern("dot_lattice")
    assert _is_binary(img)
    assert torch.equal(img[:, 4:], img[:, :-4]) and torch.equal(img[4:], img[:-4])
    # Dots are at most 2 px wide: never three white pixels in a row or a column.
    triple = img[:, :-2] * img[:, 1:-1] * img[:, 2:]
    assert triple.sum() == 0 and (img[:-2] * img[1:-1] * img[2:]).sum() == 0
    assert 0.05 <= img.mean() <= 0.3


def test_crescent_disk():
    img = canonical_pattern("crescent_disk")
    assert set(img.unique().tolist()) == {0.0, 0.5, 1.0}
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    lit = img > 0
    assert 300 < lit.sum() < 500  # disk of radius ~11.5 has area ~415
    assert lit[13, 13] and not lit[0, 0]
    grey = img == 0.5
    assert 0 < grey.sum() < (img == 1).sum()
    # Grey sits inside the disk, and is lopsided (a crescent, not a centred disk or ring).
    r = ((yy - 13.5) ** 2 + (xx - 13.5) ** 2).sqrt()
    assert r[grey].max() < 10
    gy, gx = yy[grey].mean(), xx[grey].mean()
    assert ((gy - 13.5) ** 2 + (gx - 13.5) ** 2).sqrt() > 2
    assert not grey[13, 13] and img[13, 13] == 1  # the cut-out leaves white in the middle


def test_ellipse():
    img = canonical_pattern("ellipse")
    assert _is_binary(img)
    top, bottom, left, right = _white_box(img)
    width, height = right - left + 1, bottom - top + 1
    assert 22 <= width <= 26 and 12 <= height <= 16
    assert abs((top + bottom) / 2 - 13.5) <= 1 and abs((left + right) / 2 - 13.5) <= 1


def test_noise_statistics_and_fixed_canonical():
    gauss = canonical_pattern("gaussian_noise")
    uniform = canonical_pattern("uniform_noise")
    assert torch.equal(gauss, canonical_pattern("gaussian_noise"))
    assert abs(gauss.mean() - 0.5) < 0.05 and 0.2 < gauss.std() < 0.27
    assert abs(uniform.mean() - 0.5) < 0.05 and 0.25 < uniform.std() < 0.33
    assert len(uniform.unique()) > 700


def test_checkerboard():
    img = canonical_pattern("checkerboard")
    assert _is_binary(img)
    assert torch.equal(img[:, 4:], 1 - img[:, :-4]) and torch.equal(img[4:], 1 - img[:-4])
    assert torch.equal(img[:4, :4], torch.full((4, 4), img[0, 0].item()))


def test_size_32_scales():
    assert canonical_pattern("square", 32).sum() == 64
    top, bottom, left, right = _white_box(canonical_pattern("ellipse", 32))
    assert right - left > bottom - top
    assert pattern_set(ALL, 10, seed=0, size=32).shape == (10, 1, 32, 32)


def test_random_variation_ranges():
    g = torch.Generator().manual_seed(0)
    ramp_dirs = set()
    for _ in range(40):
        sq = random_pattern("square", g)
        top, bottom, left, right = _white_box(sq)
        side = bottom - top + 1
        assert right - left + 1 == side and 4 <= side <= 12 and sq.sum() == side**2

        stripes = random_pattern("coarse_stripes", g)
        assert 8 <= _period(stripes[0]) <= 12

        dots = random_pattern("dot_lattice", g)
        assert 3 <= _period(dots.max(0).values) <= 6
        assert (dots[:, :-2] * dots[:, 1:-1] * dots[:, 2:]).sum() == 0  # dots <= 2 px wide

        board = random_pattern("checkerboard", g)
        assert 4 <= _period(board[0]) <= 14  # period is two cells of 2..7 px

        ramp = random_pattern("ramp", g)
        if torch.equal(ramp, ramp[:1].expand(28, 28)):
            ramp_dirs.add("lr" if ramp[0, 0] == 0 else "rl")
            assert ramp[0, 0] + ramp[0, -1] == 1
        else:
            assert torch.equal(ramp, ramp[:, :1].expand(28, 28))
            assert ramp[0, 0] == 0 and ramp[-1, 0] == 1
            ramp_dirs.add("tb")

        ell = random_pattern("ellipse", g)
        top, bottom, left, right = _white_box(ell)
        assert right - left > bottom - top

        disk = random_pattern("crescent_disk", g)
        assert set(disk.unique().tolist()) == {0.0, 0.5, 1.0}
    assert ramp_dirs == {"lr", "rl", "tb"}


def test_pattern_set_deterministic_and_seed_dependent():
    a = pattern_set(ALL, 12, seed=3)
    assert a.shape == (12, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, pattern_set(ALL, 12, seed=3))
    assert not torch.equal(a, pattern_set(ALL, 12, seed=4))


def test_pattern_set_cycles_kinds_in_order():
    images = pattern_set(["fine_stripes", "ramp", "uniform_noise"], 7, seed=0)[:, 0]
    for i, img in enumerate(images):
        kind = i % 3
        if kind == 0:
            assert _is_binary(img) and _period(img[0]) == 2
        elif kind == 1:
            assert len(img.unique()) == 28
        else:
            assert len(img.unique()) > 700


def test_pattern_set_leaves_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    pattern_set(ALL, 20, seed=0)
    canonical_pattern("gaussian_noise")
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    "call",
    [
        lambda: canonical_pattern("triangle"),
        lambda: random_pattern("triangle", torch.Generator()),
        lambda: pattern_set(["square", "triangle"], 4, seed=0),
    ],
)
def test_unknown_kind_raises(call):
    with pytest.raises(ValueError, match="triangle") as info:
        call()
    assert all(kind in str(info.value) for kind in ALL)


def test_bad_count_and_size_raise():
    with pytest.raises(ValueError, match=r"count.*0"):
        pattern_set(ALL, 0, seed=0)
    with pytest.raises(ValueError, match=r"size.*7"):
        pattern_set(ALL, 3, seed=0, size=7)
    with pytest.raises(ValueError, match=r"size.*5"):
        canonical_pattern("square", size=5)
    with pytest.raises(ValueError):
        pattern_set([], 3, seed=0)
