"""Shared fixtures: the data root, a private cache and W&B offline for the whole session, and a
factory of small data modules."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from datamodules import SingleExampleDataModule
from datamodules.sources import CACHE_DIR_ENV, DATA_DIR_ENV, SOURCES

MNIST, FASHION = SOURCES["mnist"], SOURCES["fashion"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """Extract archives into a session tmp dir, never the user's cache; keep W&B offline."""
    saved = {name: os.environ.get(name) for name in (CACHE_DIR_ENV, "WANDB_MODE")}
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("idc-cache"))
    os.environ.setdefault("WANDB_MODE", "offline")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root ($IDC_DATA_DIR, else <repo>/data); skips when MNIST or Fashion-MNIST lack."""
    root = Path(os.environ.get(DATA_DIR_ENV) or REPO / "data").expanduser().resolve()
    for name in ("mnist", "fashion"):
        source = SOURCES[name]
        if not source.available(root):
            pytest.skip(
                f"{source.name} is not under {root / source.folder / 'raw'} (needs "
                f"{', '.join(source.gz_files)} or their extracted IDX files); set "
                f"${DATA_DIR_ENV} to a data root that has them"
            )
    return root


@pytest.fixture
def tiny_data(data_root):
    """A factory of data modules on the real data, 16-image test sets and no download; keyword
    arguments override any of these."""
    defaults = {"root": str(data_root), "download": False, "test_size": 16}
    return lambda **overrides: SingleExampleDataModule(**{**defaults, **overrides})


def link_archives(data_root: Path, root: Path, source, leave_out: tuple[str, ...] = ()) -> None:
    raw = root / source.folder / "raw"
    raw.mkdir(parents=True)
    for name in source.gz_files:
        if not (data_root / source.folder / "raw" / name).exists():
            pytest.skip(f"{data_root} holds extracted IDX files, not the .gz archives")
        if name not in leave_out:
            (raw / name).symlink_to(data_root / source.folder / "raw" / name)


CIFAR_META = pickle.dumps(
    {
        "num_cases_per_batch": 10000,
        "label_names": [f"class{i}" for i in range(10)],
        "num_vis": 3072,
    },
    protocol=2,
)
CIFAR_COLOUR = (200, 100, 50)  # the colour of the first fake CIFAR test image, all over


def write_cifar(root: Path) -> dict:
    """Fake CIFAR-10 batches as torchvision reads them: pickled dicts with str keys, `data` uint8
    (N, 3072) holding each image's R, G and B planes row by row. Returns the arrays written."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(CIFAR_META)
    written = {}
    # Two images per training batch; the first 7 is the second image of data_batch_2 (index 3).
    batches = {f"data_batch_{i}": [i - 1, 7 if i == 2 else 0] for i in range(1, 6)}
    batches["test_batch"] = [3, 1, 4, 1, 5, 9]
    for name, labels in batches.items():
        images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        if name == "test_batch":
            images[0] = np.array(CIFAR_COLOUR, np.uint8)[:, None, None]
        entry = {
            "batch_label": name,
            "labels": labels,
            "data": images.reshape(len(labels), 3072),
            "filenames": [f"{name}_{i}.png" for i in range(len(labels))],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = (images, labels)
    return written


@pytest.fixture(scope="session")
def cifar_root(data_root, tmp_path_factory):
    """A data root with MNIST and Fashion-MNIST (linked) and a fake CIFAR-10, both splits."""
    root = tmp_path_factory.mktemp("cifar-root")
    for source in (MNIST, FASHION):
        link_archives(data_root, root, source)
    return root, write_cifar(root)
