"""Where images come from: MNIST, Fashion-MNIST and CIFAR-10 under a data root, and folders of
image files. Every loader returns float images (N, C, H, W) in [0, 1] and integer labels.

The data root is `--data.root`, else the `IDC_DATA_DIR` environment variable, else `./data`, laid
out as torchvision lays it out (`MNIST/raw/*.gz`, `FashionMNIST/raw/*.gz`,
`cifar-10-batches-py/`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets

from datamodules.errors import DataConfigError, DataNotFoundError

DATA_DIR_ENV = "IDC_DATA_DIR"
CACHE_DIR_ENV = "IDC_CACHE_DIR"
# Decoded MNIST-format splits, by (readable root, split, the files' mtime and size). A worker trains
# many cells in one process (identity_crisis/worker_loop.py): each split is decoded once, and every
# caller gets a copy, so no cell can change another's data.
_DECODED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def resolve_root(root: str | os.PathLike | None) -> Path:
    return Path(root or os.environ.get(DATA_DIR_ENV) or "data").expanduser().resolve()


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "identity-crisis"
    return Path(os.environ.get(CACHE_DIR_ENV) or default).expanduser()


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-format data set that torchvision reads from `<root>/<folder>/raw`."""

    name: str
    torchvision_class: type
    folder: str

    @property
    def gz_files(self) -> list[str]:
        return [filename for filename, _ in self.torchvision_class.resources]

    def _raw_files(self, root: Path, compressed: bool) -> list[Path]:
        names = self.gz_files if compressed else [n.removesuffix(".gz") for n in self.gz_files]
        return [root / self.folder / "raw" / n for n in names]

    def available(self, root: Path, train: bool = True) -> bool:
        return all(p.exists() for p in self._raw_files(root, False)) or all(
            p.exists() for p in self._raw_files(root, True)
        )

    def missing_message(self, root: Path, train: bool = True) -> str:
        where = root / self.folder / "raw"
        return (
            f"{self.name} is not under the data root {root}: put {', '.join(self.gz_files)} in "
            f"{where}/ (or point --data.root / ${DATA_DIR_ENV} at a folder that has them), or "
            f"run once with internet access and --data.download=true"
        )

    def folders(self, root: Path) -> list[Path]:
        return [root / self.folder / "raw"]

    def download(self, root: Path, train: bool) -> None:
        self.torchvision_class(root, train=train, download=True)

    def _readable_root(self, root: Path) -> Path:
        """A root torchvision can read without writing next to the user's files.

        torchvision reads only the uncompressed IDX files; when the root holds just the original
        .gz files (a read-only, shared copy, say), they are linked into a private cache and
        extracted there, after torchvision has checked their md5.
        """
        if all(p.exists() for p in self._raw_files(root, False)):
            return root
        if all(p.exists() for p in self._raw_files(root, True)):
            key = hashlib.sha1(str(root).encode()).hexdigest()[:12]
            cached = cache_dir() / "extracted" / key
            if not all(p.exists() for p in self._raw_files(cached, False)):
                self._extract_into(root, cached)
            return cached
        raise DataNotFoundError(self.missing_message(root))

    def _check_archives(self, root: Path) -> None:
        """The .gz files' md5, checked here: torchvision takes a mismatch for a missing file and
        tries to download it, which offline says only 'Name or service not known'."""
        for name, md5 in self.torchvision_class.resources:
            path = root / self.folder / "raw" / name
            digest = hashlib.md5(path.read_bytes()).hexdigest()
            if digest != md5:
                raise DataNotFoundError(
                    f"{path} is corrupt or truncated (md5 {digest}, expected {md5}): replace it "
                    f"with the original {self.name} file"
                )

    def _extract_into(self, root: Path, cached: Path) -> None:
        self._check_archives(root)
        cached.mkdir(parents=True, exist_ok=True)
        # Parallel sweep workers extract at once: build in a private folder and rename it into
        # place, so no reader ever sees a half-written file.
        staging = Path(tempfile.mkdtemp(dir=cached, prefix=".extract-"))
        try:
            raw = staging / self.folder / "raw"
            raw.mkdir(parents=True)
            for name in self.gz_files:
                (raw / name).symlink_to(root / self.folder / "raw" / name)
            # download=True with the archives present checks their md5 and only extracts.
            self.torchvision_class(staging, train=True, download=True)
            try:
                (staging / self.folder).rename(cached / self.folder)
            except OSError:
                if not all(p.exists() for p in self._raw_files(cached, False)):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def load(self, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        readable = self._readable_root(root)
        stats = [p.stat() for p in self._raw_files(readable, False)]
        key = (str(readable.resolve()), train, *((s.st_mtime_ns, s.st_size) for s in stats))
        if key not in _DECODED:
            try:
                dataset = self.torchvision_class(readable, train=train)
            except (RuntimeError, ValueError, OSError) as error:
                # torchvision reshapes a cut-short IDX file and says only "shape is invalid".
                raise DataNotFoundError(
                    f"{readable / self.folder / 'raw'} holds a corrupt or truncated "
                    f"{self.name} IDX file ({_first_line(error)}); replace the files with the "
                    f"original {', '.join(self.gz_files)} or their extracted IDX files"
                ) from None
            _DECODED[key] = (dataset.data.unsqueeze(1).float() / 255.0, dataset.targets.clone())
        images, labels = _DECODED[key]
        return images.clone(), labels.clone()


def _read_cifar_batches(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10's python batches (pickled dicts of uint8 rows and labels), read without
    torchvision's dataset class: it md5-checks all six batch files even to read the test batch,
    and a probe needs only `test_batch`. The real archive is md5-checked when torchvision
    downloads it."""
    data, labels = [], []
    for name in names:
        with open(folder / name, "rb") as file:
            # The batches were pickled by Python 2: byte strings, hence latin1.
            entry = pickle.load(file, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry.get("labels", entry.get("fine_labels", [])))
    images = torch.from_numpy(np.concatenate(data)).float() / 255.0
    return images, torch.tensor(labels, dtype=torch.long)


class CIFAR10Source:
    name = "CIFAR-10"
    folder = "cifar-10-batches-py"

    def files(self, train: bool) -> list[str]:
        return [n for n, _ in datasets.CIFAR10.train_list] if train else ["test_batch"]

    def available(self, root: Path, train: bool = False) -> bool:
        folder = root / self.folder
        return all((folder / n).exists() for n in [*self.files(train), "batches.meta"])

    def missing_message(self, root: Path, train: bool = False) -> str:
        return (
            f"CIFAR-10 is not under the data root {root}: put "
            f"{', '.join([*self.files(train), 'batches.meta'])} (from cifar-10-python.tar.gz) in "
            f"{root / self.folder}/, or run once with internet access and --data.download=true"
        )

    def download(self, root: Path, train: bool) -> None:
        datasets.CIFAR10(root, train=train, download=True)

    def folders(self, root: Path) -> list[Path]:
        return [root / self.folder]

    def load(self, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.available(root, train):
            raise DataNotFoundError(self.missing_message(root, train))
        return _read_cifar_batches(root / self.folder, self.files(train))


SOURCES = {
    "mnist": IdxDataset("MNIST", datasets.MNIST, "MNIST"),
    "fashion": IdxDataset("Fashion-MNIST", datasets.FashionMNIST, "FashionMNIST"),
    "cifar10": CIFAR10Source(),
}

# Each data set's native image shape (channels, height, width).
NATIVE_SHAPES = {"mnist": (1, 28, 28), "fashion": (1, 28, 28), "cifar10": (3, 32, 32)}


def check_obtainable(name: str, root: Path, train: bool, download: bool) -> None:
    """A cheap check, without reading or downloading anything: the files are there, or a
    download is allowed."""
    source = SOURCES[name]
    if not download and not source.available(root, train):
        raise DataNotFoundError(source.missing_message(root, train))


def ensure_available(name: str, root: Path, train: bool, download: bool) -> None:
    """Download what is missing (when allowed) now, so a missing data set fails before
    any training starts, with one message that says which files to put where."""
    source = SOURCES[name]
    if source.available(root, train):
        return
    if not download:
        raise DataNotFoundError(source.missing_message(root, train))
    # torchvision makes the folders before it downloads; a failed download must not leave
    # empty ones in the user's data root.
    made = [p for folder in source.folders(root) for p in (folder, *folder.parents) if p != root]
    made = [p for p in made if root in p.parents and not p.exists()]
    try:
        source.download(root, train)
    except Exception as error:  # offline, proxy, disk full: all say the same to the user
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        # --data.download=true was given (it is the default): saying to pass it would mislead.
        message = source.missing_message(root, train).removesuffix(" and --data.download=true")
        raise DataNotFoundError(f"{message} (download failed: {_first_line(error)})") from error


def load_split(name: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return SOURCES[name].load(root, train)


def to_shape(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Convert (N, C, H, W) images to `shape`: grey <-> RGB, then a bilinear, antialiased resize."""
    channels, height, width = shape
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype)
            images = (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    if images.shape[-2:] != (height, width):
        images = F.interpolate(
            images, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        ).clamp(0, 1)
    return images.contiguous()


def image_folder_files(folder: str | os.PathLike) -> list[Path]:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataConfigError(f"--data.image_folder={str(folder)!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataConfigError(
            f"--data.image_folder={str(folder)!r} holds no image files "
            f"(looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def load_image_folder(folder: str | os.PathLike, limit: int | None = None) -> list[torch.Tensor]:
    """The folder's images in name order, each (1, 3, H, W) in [0, 1] at its own size."""
    files = image_folder_files(folder)[:limit]
    return [_read_image(p) for p in files]


def _read_image(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataConfigError(
            f"--data.image_folder: {path} cannot be read as an image ({error}); remove or "
            f"replace it"
        ) from None
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).float().unsqueeze(0) / 255.0


def _first_line(error: BaseException) -> str:
    """The last non-empty line of a download error: torchvision lists every mirror it tried."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
