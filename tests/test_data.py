"""Data tests: the training image(s), the test sets, the probe panel and the data sources.

Pixels are checked against the original archives decoded here with gzip and numpy only; CIFAR-10
and image folders are checked on small files written here in the real formats.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import SingleExampleDataModule, patterns, sources
from datamodules.errors import DataConfigError, DataNotFoundError
from datamodules.single_example import DEFAULT_TEST_SETS, PROBE_NAMES
from tests.conftest import CIFAR_COLOUR, link_archives, write_cifar

MNIST, FASHION = sources.SOURCES["mnist"], sources.SOURCES["fashion"]


# --- independent readers and writers --------------------------------------------------------


@functools.cache
def _idx(root: Path, folder: str, split: str, kind: str) -> np.ndarray:
    """An IDX file decoded with gzip + numpy: uint8 images (N, 28, 28) or labels (N,)."""
    raw = root / folder / "raw" / f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    gz = raw.with_name(raw.name + ".gz")
    data = gzip.decompress(gz.read_bytes()) if gz.exists() else raw.read_bytes()
    magic, header = (2051, 16) if kind == "images" else (2049, 8)
    assert int.from_bytes(data[:4], "big") == magic
    array = np.frombuffer(data, np.uint8, offset=header)
    return array.reshape(-1, 28, 28) if kind == "images" else array


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(images)).float() / 255


def _grey(rgb: tuple[int, int, int]) -> float:
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255


def _tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    )


def _set_writable(root: Path, writable: bool) -> None:
    # Folders last when locking and first when unlocking, so every chmod can reach its path.
    for path in sorted([root, *root.rglob("*")], reverse=not writable):
        if path.is_dir():
            path.chmod(0o755 if writable else 0o555)
        else:
            path.chmod(0o644 if writable else 0o444)


# --- the training image(s) --------------------------------------------------------------------


def test_default_training_image_is_the_first_mnist_train_7(tiny_data, data_root):
    dm = tiny_data()
    dm.setup("fit")
    labels = _idx(data_root, "MNIST", "train", "labels")
    assert np.flatnonzero(labels == 7)[0] == 15
    assert dm.train_indices == [15]
    assert dm.train_images.shape == (1, 1, 28, 28) and dm.train_images.dtype == torch.float32
    assert dm.train_images.min() >= 0 and dm.train_images.max() <= 1
    expected = _pixels(_idx(data_root, "MNIST", "train", "images")[15])
    assert torch.equal(dm.train_images[0, 0], expected)
    assert dm.test_inputs == {}  # the fit stage leaves the test sets unbuilt


@pytest.mark.parametrize(
    ("split", "train_class", "train_index"),
    [("train", 3, 2), ("train", None, 0), ("train", None, 123), ("test", 7, 1)],
)
def test_train_class_and_index_pick_that_image(
    tiny_data, data_root, split, train_class, train_index
):
    file_split = "train" if split == "train" else "t10k"
    labels = _idx(data_root, "MNIST", file_split, "labels")
    pool = np.arange(len(labels)) if train_class is None else np.flatnonzero(labels == train_class)
    expected = int(pool[train_index])
    dm = tiny_data(train_split=split, train_class=train_class, train_index=train_index)
    dm.setup("fit")
    assert dm.train_indices == [expected]
    if train_class is not None:
        assert labels[expected] == train_class
    image = _idx(data_root, "MNIST", file_split, "images")[expected]
    assert torch.equal(dm.train_images[0, 0], _pixels(image))


def test_random_training_7_depends_on_train_seed(tiny_data, data_root):
    def pick(seed):
        dm = tiny_data(train_index=None, train_seed=seed)
        dm.setup("fit")
        return dm

    first, again, other = pick(0), pick(0), pick(1)
    assert first.train_indices == again.train_indices
    assert torch.equal(first.train_images, again.train_images)
    assert first.train_indices != other.train_indices
    labels = _idx(data_root, "MNIST", "train", "labels")
    images = _idx(data_root, "MNIST", "train", "images")
    for dm in (first, other):
        (index,) = dm.train_indices
        assert labels[index] == 7
        assert torch.equal(dm.train_images[0, 0], _pixels(images[index]))


@pytest.mark.parametrize(("train_index", "num_train"), [(0, 10), (5, 3)])
def test_num_train_takes_consecutive_images_of_the_class(
    tiny_data, data_root, train_index, num_train
):
    dm = tiny_data(train_index=train_index, num_train=num_train)
    dm.setup("fit")
    sevens = np.flatnonzero(_idx(data_root, "MNIST", "train", "labels") == 7)
    expected = sevens[train_index : train_index + num_train].tolist()
    assert dm.train_indices == expected and len(set(expected)) == num_train
    images = _idx(data_root, "MNIST", "train", "images")
    assert dm.train_images.shape == (num_train, 1, 28, 28)
    assert torch.equal(dm.train_images[:, 0], _pixels(images[expected]))


def test_num_train_per_class_takes_that_many_of_every_class(tiny_data, data_root):
    dm = tiny_data(train_class=None, num_train_mode="per_class", num_train=2)
    dm.setup("fit")
    labels = _idx(data_root, "MNIST", "train", "labels")
    assert dm.train_images.shape == (20, 1, 28, 28)
    assert np.bincount(labels[dm.train_indices], minlength=10).tolist() == [2] * 10
    first_two = {int(i) for c in range(10) for i in np.flatnonzero(labels == c)[:2]}
    assert set(dm.train_indices) == first_two
    images = _idx(data_root, "MNIST", "train", "images")
    assert torch.equal(dm.train_images[:, 0], _pixels(images[dm.train_indices]))


def test_per_class_with_a_train_class_is_refused(tiny_data):
    with pytest.raises(DataConfigError, match="per_class"):
        tiny_data(num_train_mode="per_class", train_class=7)


def test_too_large_index_names_the_numbers(tiny_data, data_root):
    count = int((_idx(data_root, "MNIST", "train", "labels") == 7).sum())
    last = tiny_data(train_index=count - 1)  # the last 7 still works
    last.setup("fit")
    assert len(last.train_indices) == 1
    dm = tiny_data(train_index=count - 1, num_train=2)
    with pytest.raises(DataConfigError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert f"train_index={count - 1}" in message and "num_train=2" in message
    assert f"there are {count} " in message


# --- test sets ------------------------------------------------------------------------------


def test_default_test_sets_and_their_dataloaders(tiny_data, data_root):
    dm = tiny_data(test_sizes={"patterns": 5}, batch_size=8)
    dm.setup("test")
    assert dm.test_set_names == list(DEFAULT_TEST_SETS)
    assert list(dm.test_inputs) == dm.test_set_names
    for name, images in dm.test_inputs.items():
        assert images.shape == ((5 if name == "patterns" else 16), 1, 28, 28), name
        assert images.dtype == torch.float32
        assert images.min() >= 0 and images.max() <= 1, name
        assert images.flatten(1).std(1).min() > 0, f"{name} holds a constant image"
    for name, folder in (("mnist", "MNIST"), ("fashion", "FashionMNIST")):
        expected = _pixels(_idx(data_root, folder, "t10k", "images")[:16]).unsqueeze(1)
        assert torch.equal(dm.test_inputs[name], expected), name
    assert torch.equal(
        dm.test_inputs["patterns"], patterns.pattern_set(patterns.PATTERN_KINDS, 5, seed=0)
    )
    for kind in patterns.NOISE_KINDS:
        assert torch.equal(dm.test_inputs[kind], patterns.pattern_set([kind], 16, seed=0)), kind

    loaders = dm.test_dataloader()
    assert len(loaders) == len(dm.test_set_names)
    for name, loader in zip(dm.test_set_names, loaders, strict=True):
        batches = [batch for (batch,) in loader]
        assert max(len(b) for b in batches) <= 8
        assert torch.equal(torch.cat(batches), dm.test_inputs[name]), name


def test_mnist_pairs_are_averages_of_two_test_digits(tiny_data, data_root):
    dm = tiny_data(test_sets=["mnist_pairs"], test_size=8)
    dm.setup("test")
    digits = _idx(data_root, "MNIST", "t10k", "images").reshape(-1, 784)
    lookup = {digit.tobytes(): i for i, digit in enumerate(digits)}
    digits = digits.astype(np.int16)
    for pair in dm.test_inputs["mnist_pairs"].reshape(-1, 784).numpy():
        total = pair.astype(np.float64) * 510  # a + b, both in 0..255
        assert np.abs(total - np.rint(total)).max() < 1e-3  # on the half-step lattice k/510
        others = np.rint(total).astype(np.int16) - digits  # b for every candidate a
        fits = np.flatnonzero(((others >= 0) & (others <= 255)).all(1))
        found = [
            a for a in fits if lookup.get(others[a].astype(np.uint8).tobytes()) not in (None, a)
        ]
        assert found, "a pair image that is not the average of two MNIST test digits"


def test_synthetic_sets_are_seeded(tiny_data):
    sets = []
    for seed in (0, 0, 1):
        dm = tiny_data(test_seed=seed)
        dm.setup("test")
        sets.append(dm.test_inputs)
    first, again, other = sets
    for name in DEFAULT_TEST_SETS:
        assert torch.equal(first[name], again[name]), name
        same_split = name in ("mnist", "fashion")  # the first images of the split, whatever seed
        assert torch.equal(first[name], other[name]) == same_split, name


def test_test_sizes_override_one_set(tiny_data):
    dm = tiny_data(test_sets=["mnist", "gaussian_noise"], test_sizes={"gaussian_noise": 3})
    dm.setup("test")
    assert {k: len(v) for k, v in dm.test_inputs.items()} == {"mnist": 16, "gaussian_noise": 3}


# --- probe panel and training stream ---------------------------------------------------------


def test_probe_inputs_follow_probe_names(tiny_data, data_root):
    dm = tiny_data()
    dm.setup("fit")
    probes = dm.probe_inputs()
    assert len(PROBE_NAMES) == 14 and probes.shape == (14, 1, 28, 28)
    assert probes.min() >= 0 and probes.max() <= 1
    rows = dict(zip(PROBE_NAMES, probes[:, 0], strict=True))
    assert torch.equal(rows["train"], dm.train_images[0, 0])
    mnist = _idx(data_root, "MNIST", "t10k", "images")
    mnist_labels = _idx(data_root, "MNIST", "t10k", "labels")
    fashion = _idx(data_root, "FashionMNIST", "t10k", "images")
    fashion_labels = _idx(data_root, "FashionMNIST", "t10k", "labels")
    assert mnist_labels[[1, 3, 4, 7]].tolist() == [2, 0, 4, 9]
    assert fashion_labels[[9, 1]].tolist() == [7, 2]  # sneaker, pullover
    pair = (_pixels(mnist[1]) + _pixels(mnist[3])) / 2
    torch.testing.assert_close(rows["mnist_pair"], pair, rtol=0, atol=1e-6)
    assert torch.equal(rows["mnist_4"], _pixels(mnist[4]))
    assert torch.equal(rows["mnist_9"], _pixels(mnist[7]))
    assert torch.equal(rows["fashion_sneaker"], _pixels(fashion[9]))
    assert torch.equal(rows["fashion_pullover"], _pixels(fashion[1]))
    for kind in (*patterns.PATTERN_KINDS, "gaussian_noise"):
        assert torch.equal(rows[kind], patterns.canonical_pattern(kind)), kind


def test_train_dataloader_streams_the_full_batch_forever(tiny_data):
    dm = tiny_data(num_train=3)
    dm.setup("fit")
    batches = list(itertools.islice(iter(dm.train_dataloader()), 5))
    assert len(batches) == 5
    for batch in batches:
        assert batch["images"].shape == (3, 1, 28, 28) and batch["minibatch"] is False
        assert torch.equal(batch["images"], dm.train_images)
    # The first batch carries the whole set for the model to keep; the others do not repeat it.
    assert torch.equal(batches[0]["whole"], dm.train_images)
    assert all(batch["whole"] is None for batch in batches[1:])


def test_train_batch_size_streams_random_minibatches_that_cover_each_pass(tiny_data):
    dm = tiny_data(num_train=10, train_batch_size=4, shuffle_seed=0)
    dm.setup("fit")
    stream = list(itertools.islice(iter(dm.train_dataloader()), 6))
    assert all(batch["minibatch"] is True for batch in stream)
    assert torch.equal(stream[0]["whole"], dm.train_images)
    assert all(batch["whole"] is None for batch in stream[1:])
    batches = [batch["images"] for batch in stream]
    rows = {tuple(image.flatten().tolist()): i for i, image in enumerate(dm.train_images)}
    picked = [[rows[tuple(image.flatten().tolist())] for image in batch] for batch in batches]
    assert all(len(batch) == 4 for batch in picked)
    # A pass is 2 whole batches (the last 2 images of each permutation are dropped): 8 distinct
    # images, and the next pass is another order.
    passes = [picked[0] + picked[1], picked[2] + picked[3], picked[4] + picked[5]]
    assert all(len(set(images)) == 8 for images in passes)
    assert len({tuple(images) for images in passes}) == 3
    again = next(iter(dm.train_dataloader()))["images"]
    assert torch.equal(again, batches[0])
    other = tiny_data(num_train=10, train_batch_size=4, shuffle_seed=1)
    other.setup("fit")
    assert not torch.equal(next(iter(other.train_dataloader()))["images"], batches[0])


def test_the_command_line_links_the_shuffle_seed_to_the_runs_seed(data_root, tmp_path):
    from identity_crisis.cli import IdentityCrisisCLI

    def shuffle_seed(*args):
        argv = ["--config", "configs/cnn.yaml", f"--data.root={data_root}", *args]
        cli = IdentityCrisisCLI(args=[*argv, f"--run.root={tmp_path}"], run=False)
        return cli.datamodule.hparams.shuffle_seed

    assert shuffle_seed("--seed_everything=5") == 5
    assert shuffle_seed("--seed_everything=0") == 0


def test_train_batch_size_of_the_whole_set_is_the_full_batch(tiny_data):
    dm = tiny_data(num_train=3, train_batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch["images"], dm.train_images) and batch["minibatch"] is False


def test_train_batch_size_above_the_training_images_is_refused(tiny_data):
    dm = tiny_data(num_train=3, train_batch_size=5)
    with pytest.raises(DataConfigError, match="train_batch_size=5 is more than the 3 training"):
        dm.setup("fit")


# --- data roots -----------------------------------------------------------------------------


def test_read_only_root_with_only_archives_extracts_into_the_cache(
    data_root, tmp_path, monkeypatch
):
    root, cache = tmp_path / "root", tmp_path / "cache"
    for source in (MNIST, FASHION):
        (root / source.folder / "raw").mkdir(parents=True)
        for name in source.gz_files:
            original = data_root / source.folder / "raw" / name
            if not original.exists():
                pytest.skip(f"{data_root} holds extracted IDX files, not the .gz archives")
            shutil.copyfile(original, root / source.folder / "raw" / name)
    monkeypatch.setenv(sources.CACHE_DIR_ENV, str(cache))
    extractions = []
    extract = sources.IdxDataset._extract_into

    def counted(self, *args):
        extractions.append(self.name)
        return extract(self, *args)

    monkeypatch.setattr(sources.IdxDataset, "_extract_into", counted)
    before = _tree(root)
    _set_writable(root, False)
    try:
        for _ in range(2):
            dm = SingleExampleDataModule(
                root=str(root), download=False, test_sets=["mnist", "fashion"], test_size=4
            )
            dm.setup("test")
            assert dm.train_indices == [15]
            expected = _pixels(_idx(data_root, "MNIST", "train", "images")[15])
            assert torch.equal(dm.train_images[0, 0], expected)
            assert dm.test_inputs["fashion"].shape == (4, 1, 28, 28)
        assert _tree(root) == before  # nothing written beside the archives
    finally:
        _set_writable(root, True)
    assert sorted(extractions) == ["Fashion-MNIST", "MNIST"]  # the second load reused the cache
    for source in (MNIST, FASHION):
        for name in source.gz_files:
            (extracted,) = cache.rglob(f"{source.folder}/raw/{name.removesuffix('.gz')}")
            if name.startswith("t10k-labels"):
                archive = data_root / source.folder / "raw" / name
                assert extracted.read_bytes() == gzip.decompress(archive.read_bytes())
    assert not list(cache.rglob(".extract-*"))  # no staging folder left behind


@pytest.mark.parametrize("case", ["empty", "mnist_incomplete", "no_fashion"])
def test_missing_data_fails_in_the_constructor(request, tmp_path, monkeypatch, case):
    root = tmp_path.resolve()
    if case != "empty":  # only these need the real archives to link
        leave_out = ("t10k-labels-idx1-ubyte.gz",) if case == "mnist_incomplete" else ()
        link_archives(request.getfixturevalue("data_root"), root, MNIST, leave_out)
    missing = {"empty": [MNIST, FASHION], "mnist_incomplete": [MNIST], "no_fashion": [FASHION]}
    loads = []
    monkeypatch.setattr(sources, "load_split", lambda *args: loads.append(args))
    with pytest.raises(DataNotFoundError) as info:
        SingleExampleDataModule(root=str(root), download=False)
    assert isinstance(info.value, DataConfigError) and not loads
    message = str(info.value)  # one message for everything missing
    for source in missing[case]:
        assert str(root / source.folder / "raw") in message
        for name in source.gz_files:
            assert name in message


# --- CIFAR-10 -------------------------------------------------------------------------------


def test_cifar10_loader_reads_the_real_format(tmp_path):
    written = write_cifar(tmp_path)
    images, labels = sources.load_split("cifar10", tmp_path, train=False)
    test_images, test_labels = written["test_batch"]
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, _pixels(test_images))
    assert labels.tolist() == test_labels
    images, labels = sources.load_split("cifar10", tmp_path, train=True)
    train = [written[f"data_batch_{i}"] for i in range(1, 6)]
    assert torch.equal(images, _pixels(np.concatenate([b[0] for b in train])))
    assert labels.tolist() == [label for b in train for label in b[1]]


def test_cifar10_test_set_of_an_mnist_run_is_grey(tiny_data, cifar_root):
    root, _ = cifar_root
    dm = tiny_data(root=str(root), test_sets=["mnist", "cifar10"], test_sizes={"cifar10": 4})
    dm.setup("test")
    cifar = dm.test_inputs["cifar10"]
    assert cifar.shape == (4, 1, 28, 28)
    assert cifar.min() >= 0 and cifar.max() <= 1
    torch.testing.assert_close(cifar[0], torch.full((1, 28, 28), _grey(CIFAR_COLOUR)))
    assert dm.test_inputs["mnist"].shape == (16, 1, 28, 28)


def test_cifar10_run_is_rgb_and_converts_the_other_sets(tiny_data, data_root, cifar_root):
    root, written = cifar_root
    dm = tiny_data(root=str(root), train_dataset="cifar10", test_sets=["mnist", "patterns"])
    dm.setup("test")
    assert dm.image_shape == (3, 32, 32)
    assert dm.train_indices == [3]  # the first 7: data_batch_2, second image
    assert torch.equal(dm.train_images[0], _pixels(written["data_batch_2"][0][1]))
    assert not torch.equal(dm.train_images[0, 0], dm.train_images[0, 1])
    mnist = dm.test_inputs["mnist"]
    assert mnist.shape == (16, 3, 32, 32) and mnist.min() >= 0 and mnist.max() <= 1
    assert torch.equal(mnist[:, 0], mnist[:, 1]) and torch.equal(mnist[:, 0], mnist[:, 2])
    originals = _pixels(_idx(data_root, "MNIST", "t10k", "images")[:16])
    torch.testing.assert_close(mnist[:, 0].mean((1, 2)), originals.mean((1, 2)), atol=0.02, rtol=0)
    assert dm.test_inputs["patterns"].shape[1:] == (3, 32, 32)
    probes = dm.probe_inputs()
    assert probes.shape == (14, 3, 32, 32) and torch.equal(probes[0], dm.train_images[0])


@pytest.mark.parametrize(
    ("train_dataset", "leave_out"), [("mnist", "test_batch"), ("cifar10", "data_batch_3")]
)
def test_incomplete_cifar10_names_the_missing_file(data_root, tmp_path, train_dataset, leave_out):
    root = tmp_path.resolve()
    for source in (MNIST, FASHION):
        link_archives(data_root, root, source)
    write_cifar(root)
    (root / "cifar-10-batches-py" / leave_out).unlink()
    with pytest.raises(DataNotFoundError, match=leave_out) as info:
        SingleExampleDataModule(
            root=str(root), download=False, train_dataset=train_dataset, test_sets=["cifar10"]
        )
    assert str(root / "cifar-10-batches-py") in str(info.value)
    with pytest.raises(DataNotFoundError, match=leave_out):
        sources.load_split("cifar10", root, train=leave_out != "test_batch")


# --- image folders --------------------------------------------------------------------------


def test_image_folder_adds_the_folder_set(tiny_data, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 40), (255, 255, 255)).save(folder / "a_white.png")
    Image.new("L", (28, 28), 0).save(folder / "b_black.png")
    half = Image.new("RGB", (50, 40), (0, 0, 0))  # 50 wide, 40 high: left half coloured
    half.paste(CIFAR_COLOUR, (0, 0, 25, 40))
    half.save(folder / "c_half.png")
    (folder / "notes.txt").write_text("not an image")

    dm = tiny_data(test_sets=["patterns"], image_folder=str(folder))
    assert dm.test_set_names == ["patterns", "folder"]
    dm.setup("test")
    white, black, half = dm.test_inputs["folder"]
    assert dm.test_inputs["folder"].shape == (3, 1, 28, 28)
    torch.testing.assert_close(white, torch.ones(1, 28, 28))
    torch.testing.assert_close(black, torch.zeros(1, 28, 28))
    torch.testing.assert_close(half[..., :12], torch.full((1, 28, 12), _grey(CIFAR_COLOUR)))
    torch.testing.assert_close(half[..., 16:], torch.zeros(1, 28, 12))
    assert len(dm.test_dataloader()) == 2

    limited = tiny_data(test_sets=["patterns"], image_folder=str(folder), test_sizes={"folder": 2})
    limited.setup("test")
    assert torch.equal(limited.test_inputs["folder"], dm.test_inputs["folder"][:2])


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_bad_image_folder_names_the_path(tmp_path, case):
    folder = tmp_path / "images"
    if case == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("not an image")
    with pytest.raises(DataConfigError, match="image_folder") as info:
        SingleExampleDataModule(root=str(tmp_path / "no-data"), image_folder=str(folder))
    assert str(folder) in str(info.value)
    assert not isinstance(info.value, DataNotFoundError)


def test_folder_set_needs_an_image_folder(tmp_path):
    with pytest.raises(DataConfigError, match="image_folder") as info:
        SingleExampleDataModule(root=str(tmp_path), test_sets=["mnist", "folder"])
    assert not isinstance(info.value, DataNotFoundError)


# --- configuration --------------------------------------------------------------------------


def test_a_test_size_for_a_set_not_tested_is_refused(tmp_path):
    # Choices and bounds are the command line's typed parser's (tests/test_cli.py); a check across
    # two arguments stays with the data module.
    with pytest.raises(DataConfigError, match="'fashion', which is not among the test sets"):
        SingleExampleDataModule(root=str(tmp_path), test_sets=["mnist"], test_sizes={"fashion": 3})


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, ["mnist7"]),
        ({"train_index": None, "train_seed": 3}, ["mnist7", "r3"]),
        ({"num_train": 10}, ["mnist7", "n10"]),
        ({"num_train": 10, "train_batch_size": 5}, ["mnist7", "n10", "b5"]),
        ({"train_split": "test", "train_index": 4}, ["mnist7", "test", "i4"]),
        (
            {"train_class": None, "num_train_mode": "per_class", "num_train": 2},
            ["mnistall", "n2pc"],
        ),
    ],
)
def test_name_parts(tiny_data, overrides, expected):
    assert tiny_data(**overrides).name_parts() == expected


def _write_idx(root: Path, images: np.ndarray) -> None:
    """Uncompressed MNIST IDX files (train and test the same images), the layout torchvision
    reads."""
    raw = root / MNIST.folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    n = len(images)
    labels = np.arange(n, dtype=np.uint8) % 10
    for split in ("train", "t10k"):
        image_header = (2051).to_bytes(4, "big") + b"".join(
            v.to_bytes(4, "big") for v in (n, 28, 28)
        )
        (raw / f"{split}-images-idx3-ubyte").write_bytes(image_header + images.tobytes())
        label_header = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(label_header + labels.tobytes())


def test_a_split_is_decoded_once_per_process_and_every_caller_gets_its_own_copy(tmp_path):
    """A worker process trains many cells: they share the decoding, never the tensors, and a
    changed file is read again."""
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path, first)
    images, labels = sources.load_split("mnist", tmp_path, train=False)
    torch.testing.assert_close(images[:, 0], _pixels(first))
    images.zero_()
    labels.zero_()
    again, labels_again = sources.load_split("mnist", tmp_path, train=False)
    torch.testing.assert_close(again[:, 0], _pixels(first))
    assert labels_again.tolist() == [0, 1, 2, 3, 4]
    second = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path, second)
    changed, _ = sources.load_split("mnist", tmp_path, train=False)
    torch.testing.assert_close(changed[:, 0], _pixels(second))
