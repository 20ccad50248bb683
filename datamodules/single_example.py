"""The data of one identity-task run: the training image(s) and every named test set.

Training is full batch on one image by default (an MNIST training "7"); many training images can
be taken in random minibatches instead (`train_batch_size`). Each test set is its own
test dataloader so its scores are logged under its own name (`test/<set>/...`). The fixed probe
inputs of the paper's figures 2 and 3 come from `probe_inputs()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, get_args

import torch
import torch.distributed as dist
from jsonargparse.typing import NonNegativeInt, PositiveInt
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from datamodules import patterns, sources
from datamodules.errors import DataConfigError, DataNotFoundError

# Typed choices: LightningCLI (jsonargparse) checks them before anything is built and `--help`
# lists them.
TrainDataset = Literal["mnist", "fashion", "cifar10"]
TestSet = Literal[
    "mnist",
    "fashion",
    "mnist_pairs",
    "patterns",
    "gaussian_noise",
    "uniform_noise",
    "checkerboard",
    "cifar10",
    "folder",
]
TRAIN_DATASETS, TEST_SETS = get_args(TrainDataset), get_args(TestSet)
# CIFAR-10 is not on every machine and `folder` needs a folder: both only when asked for.
DEFAULT_TEST_SETS = tuple(name for name in TEST_SETS if name not in ("cifar10", "folder"))
# The four sets a result is first read on (the paper's figure 3 columns and a noise check): the
# report's main curves, its summary table and the closed-form theory use these.
HEADLINE_TEST_SETS = ("mnist", "fashion", "patterns", "gaussian_noise")

# The probe panel: the columns of the paper's figures 2 and 3 after the training image, plus one
# noise image. Test-split indices chosen once to resemble the paper's columns.
MNIST_PAIR = (1, 3)  # a "2" and a "0", averaged
MNIST_DIGITS = (4, 7)  # a "4" and a "9"
FASHION_ITEMS = (9, 1)  # a sneaker and a pullover
PROBE_NAMES = (
    "train",
    "mnist_pair",
    "mnist_4",
    "mnist_9",
    "fashion_sneaker",
    "fashion_pullover",
    *patterns.PATTERN_KINDS,
    "gaussian_noise",
)
# With an image folder, the panel shows this many of its images: as many columns as the fixed
# probes, so the panel stays readable.
FOLDER_PROBES = len(PROBE_NAMES) - 1


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the process count of a data-parallel run; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_batch(images: torch.Tensor, minibatch: bool, whole: torch.Tensor | None) -> dict:
    """What a training step gets: `images` to step on, whether they are a minibatch (worth one
    step) or the full batch (worth the step budget of a call), and, in the first batch of a
    stream only, the `whole` training set, which the model keeps to score its fit against."""
    return {"images": images, "minibatch": minibatch, "whole": whole}


class FullBatchStream(IterableDataset):
    """The whole training set as one batch, forever: one optimizer step per batch, no epoch
    boundaries to pay for; the Trainer stops at `max_steps`. Under DDP each rank streams its own
    shard, so the ranks together see the full batch."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __iter__(self) -> Iterator[dict]:
        rank, world = _rank_and_world()
        images = self.images[rank::world]
        yield train_batch(images, False, self.images)
        while True:
            yield train_batch(images, False, None)


class MinibatchStream(IterableDataset):
    """Random minibatches of the training set, forever: every pass over the set is a fresh
    permutation drawn from `seed`, and its last partial batch is dropped so that every step
    averages the same number of images. Under DDP every rank draws the same permutation and
    takes its own slice of each minibatch, so the ranks together take the whole minibatch."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int):
        self.images, self.batch_size, self.seed = images, batch_size, seed

    def __iter__(self) -> Iterator[dict]:
        rank, world = _rank_and_world()
        generator = torch.Generator().manual_seed(self.seed)
        count, size = len(self.images), self.batch_size
        whole = self.images
        while True:
            order = torch.randperm(count, generator=generator)
            for start in range(0, count - size + 1, size):
                part = order[start : start + size][rank::world]
                yield train_batch(self.images[part], True, whole)
                whole = None


class SingleExampleDataModule(LightningDataModule):
    """One training image (or `num_train` of them) and the named test sets.

    Args:
        root: data root; default `$IDC_DATA_DIR`, else `./data`.
        download: let torchvision download what is missing (needs internet).
        train_dataset: mnist, fashion or cifar10; it fixes the image shape of the whole run.
        train_split: train or test split to take the training image(s) from.
        train_class: class of the training image (7 = the paper's "7"); null = any class.
        train_index: position within that class (0 = the first 7 of MNIST's train split,
            absolute index 15); null = a random one drawn with `train_seed`.
        train_seed: seed of that draw (used only when `train_index` is null).
        num_train: number of training images; > 1 takes `num_train` consecutive ones of the
            class from `train_index` on ("first"), or that many of every class ("per_class").
        num_train_mode: first or per_class.
        train_batch_size: training images per optimizer step; null = all of them (full batch,
            the paper's setting). Fewer: random minibatches, reshuffled every pass over the
            set, in an order drawn from `shuffle_seed`.
        shuffle_seed: seed of the minibatch order; the command line links it to the run's
            `seed_everything`, so every rank of a data-parallel run draws the same order; null =
            torch's current seed.
        test_sets: names of the test sets to evaluate (see TEST_SETS); `folder` is added when
            `image_folder` is given.
        test_size: images per test set (the first ones of a split, or seeded synthetic ones).
        test_sizes: per-set overrides of `test_size`; the folder set holds all its images unless
            named here.
        test_seed: seed of the synthetic sets and of the MNIST pairs.
        image_folder: a folder of image files to probe the net with (the `folder` test set).
        batch_size: test batch size.
    """

    def __init__(
        self,
        root: str | None = None,
        download: bool = True,
        train_dataset: TrainDataset = "mnist",
        train_split: Literal["train", "test"] = "train",
        train_class: int | None = 7,
        train_index: NonNegativeInt | None = 0,
        train_seed: int = 0,
        num_train: PositiveInt = 1,
        num_train_mode: Literal["first", "per_class"] = "first",
        train_batch_size: PositiveInt | None = None,
        shuffle_seed: int | None = None,
        test_sets: Sequence[TestSet] = DEFAULT_TEST_SETS,
        test_size: PositiveInt = 100,
        test_sizes: dict[TestSet, PositiveInt] | None = None,
        test_seed: int = 0,
        image_folder: str | None = None,
        batch_size: PositiveInt = 256,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        if num_train_mode == "per_class" and train_class is not None:
            raise DataConfigError(
                f"--data.num_train_mode=per_class takes images of every class, but "
                f"--data.train_class={train_class}; set --data.train_class=null"
            )
        self.test_set_names = list(dict.fromkeys(test_sets))
        if image_folder is not None:
            sources.image_folder_files(image_folder)
            if "folder" not in self.test_set_names:
                self.test_set_names.append("folder")
        elif "folder" in self.test_set_names:
            raise DataConfigError(
                "--data.test_sets names 'folder' but --data.image_folder is not set"
            )
        self.test_sizes = dict(test_sizes or {})
        for name in self.test_sizes:
            if name not in self.test_set_names:
                raise DataConfigError(
                    f"--data.test_sizes names {name!r}, which is not among the test sets "
                    f"({', '.join(self.test_set_names)})"
                )

        self.root = sources.resolve_root(root)
        self.image_shape = sources.NATIVE_SHAPES[train_dataset]
        # Only a presence check here, so a missing data set fails before a run starts; reading
        # and downloading belong to prepare_data.
        self._each_split(sources.check_obtainable)

        self.train_images: torch.Tensor | None = None
        self.train_indices: list[int] = []
        self.test_inputs: dict[str, torch.Tensor] = {}
        self._splits: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: tuple[torch.Tensor, torch.device, torch.Tensor] | None = None

    def _splits_needed(self) -> list[tuple[str, bool]]:
        """(data set, train split?) pairs: the probe panel needs MNIST and Fashion-MNIST test
        images whatever the run trains on."""
        hp = self.hparams
        needed = [
            (hp.train_dataset, hp.train_split == "train"),
            ("mnist", False),
            ("fashion", False),
        ]
        needed += [(n, False) for n in self.test_set_names if n in sources.SOURCES]
        return list(dict.fromkeys(needed))

    def _each_split(self, check) -> None:
        """check(name, root, train, download) on every split needed, with one message for all
        that fail."""
        missing = []
        for name, train in self._splits_needed():
            try:
                check(name, self.root, train, self.hparams.download)
            except DataNotFoundError as error:
                missing.append(str(error))
        if missing:  # a data set's train and test splits fail with the same line
            raise DataNotFoundError("\n".join(dict.fromkeys(missing)))

    def prepare_data(self) -> None:
        """Download (when allowed) and md5-check what is missing, once per machine."""
        self._each_split(sources.ensure_available)

    @property
    def probe_names(self) -> tuple[str, ...]:
        """The names of `probe_inputs()`, in order: with an image folder, its files' names."""
        if self.hparams.image_folder is None:
            return PROBE_NAMES
        files = sources.image_folder_files(self.hparams.image_folder)[:FOLDER_PROBES]
        return ("train", *(file.stem for file in files))

    # How a data option reads in a run name and in the report's row labels ("n1000").
    SHORT_NAMES = {"num_train": "n", "train_index": "i", "train_seed": "r"}

    def name_parts(self) -> list[str]:
        """The training data in a run name: 'mnist7', plus the index, count and mode when they
        differ from the defaults."""
        hp = self.hparams
        parts = [f"{hp.train_dataset}{'all' if hp.train_class is None else hp.train_class}"]
        if hp.train_split != "train":
            parts.append(hp.train_split)
        if hp.train_index is None:
            parts.append(f"{self.SHORT_NAMES['train_seed']}{hp.train_seed}")
        elif hp.train_index != 0:
            parts.append(f"{self.SHORT_NAMES['train_index']}{hp.train_index}")
        if hp.num_train > 1:
            per_class = "pc" if hp.num_train_mode == "per_class" else ""
            parts.append(f"{self.SHORT_NAMES['num_train']}{hp.num_train}{per_class}")
        if hp.train_batch_size is not None:
            parts.append(f"b{hp.train_batch_size}")
        return parts

    def _split(self, name: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if (name, train) not in self._splits:
            self._splits[(name, train)] = sources.load_split(name, self.root, train)
        return self._splits[(name, train)]

    def _shaped(self, images: torch.Tensor) -> torch.Tensor:
        return sources.to_shape(images, self.image_shape)

    def setup(self, stage: str | None = None) -> None:
        if self.train_images is None:
            self.train_indices = self._choose_train_indices()
            images, _ = self._split(self.hparams.train_dataset, self.hparams.train_split == "train")
            self.train_images = images[self.train_indices].clone()
            size = self.hparams.train_batch_size
            if size is not None and size > len(self.train_images):
                raise DataConfigError(
                    f"--data.train_batch_size={size} is more than the {len(self.train_images)} "
                    f"training images; use at most {len(self.train_images)} (or null for full "
                    f"batch)"
                )
        if stage in (None, "test", "predict") and not self.test_inputs:
            self.test_inputs = {name: self._build_test_set(name) for name in self.test_set_names}

    def _choose_train_indices(self) -> list[int]:
        hp = self.hparams
        _, labels = self._split(hp.train_dataset, hp.train_split == "train")
        classes = [hp.train_class] if hp.num_train_mode == "first" else labels.unique().tolist()
        chosen: list[int] = []
        for cls in classes:
            pool = torch.arange(len(labels)) if cls is None else (labels == cls).nonzero()[:, 0]
            what = f"{hp.train_dataset} {hp.train_split} images" + (
                "" if cls is None else f" of class {cls}"
            )
            if len(pool) == 0:
                raise DataConfigError(f"--data.train_class={cls}: there are no {what}")
            if hp.train_index is None:
                generator = torch.Generator().manual_seed(hp.train_seed)
                picks = pool[torch.randperm(len(pool), generator=generator)[: hp.num_train]]
            else:
                picks = pool[hp.train_index : hp.train_index + hp.num_train]
            if len(picks) < hp.num_train:
                raise DataConfigError(
                    f"--data.train_index={hp.train_index} with --data.num_train={hp.num_train} "
                    f"needs {hp.num_train} images but there are {len(pool)} {what}"
                )
            chosen += picks.tolist()
        return chosen

    def _size(self, name: str) -> int | None:
        if name in self.test_sizes:
            return self.test_sizes[name]
        return None if name == "folder" else self.hparams.test_size

    def _build_test_set(self, name: str) -> torch.Tensor:
        size, seed, side = self._size(name), self.hparams.test_seed, self.image_shape[-1]
        if name in sources.SOURCES:
            images, _ = self._split(name, False)
            return self._shaped(images[:size])
        if name == "mnist_pairs":
            images, _ = self._split("mnist", False)
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(len(images), generator=generator)[: 2 * size]
            return self._shaped((images[order[0::2]] + images[order[1::2]]) / 2)
        if name == "patterns":
            return self._shaped(patterns.pattern_set(patterns.PATTERN_KINDS, size, seed, side))
        if name in patterns.NOISE_KINDS:
            return self._shaped(patterns.pattern_set([name], size, seed, side))
        files = sources.load_image_folder(self.hparams.image_folder, size)
        return torch.cat([self._shaped(image) for image in files])

    def probe_inputs(self) -> torch.Tensor:
        """The panel's inputs, in `probe_names` order: the training image, then the paper's
        probes (PROBE_NAMES) or, with an image folder, the folder's first FOLDER_PROBES images
        (the images a user brought are what they want to see)."""
        if self.hparams.image_folder is not None:
            files = sources.load_image_folder(self.hparams.image_folder, FOLDER_PROBES)
            return torch.cat([self.train_images[:1], *(self._shaped(image) for image in files)])
        mnist, _ = self._split("mnist", False)
        fashion, _ = self._split("fashion", False)
        side = self.image_shape[-1]
        kinds = (*patterns.PATTERN_KINDS, "gaussian_noise")
        synthetic = torch.stack([patterns.canonical_pattern(k, side) for k in kinds]).unsqueeze(1)
        grey = [
            (mnist[MNIST_PAIR[0]] + mnist[MNIST_PAIR[1]]).unsqueeze(0) / 2,
            mnist[list(MNIST_DIGITS)],
            fashion[list(FASHION_ITEMS)],
            synthetic,
        ]
        return torch.cat([self.train_images[:1], *(self._shaped(g) for g in grey)])

    def train_dataloader(self) -> DataLoader:
        size = self.hparams.train_batch_size
        if size is None or size == len(self.train_images):
            return DataLoader(FullBatchStream(self.train_images), batch_size=None)
        seed = self.hparams.shuffle_seed
        seed = torch.initial_seed() if seed is None else seed
        stream = MinibatchStream(self.train_images, size, seed=seed)
        return DataLoader(stream, batch_size=None)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # The full-batch stream yields the very same tensor every step: copy it to the
        # accelerator once, not once per step (each copy from pageable memory is a host sync).
        if isinstance(batch, dict) and isinstance(batch.get("images"), torch.Tensor):
            images, cached = batch["images"], self._on_device
            if cached is None or cached[0] is not images or cached[1] != device:
                self._on_device = (images, device, images.to(device))
            whole = batch["whole"]
            return {
                **batch,
                "images": self._on_device[2],
                "whole": None if whole is None else whole.to(device),
            }
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def test_dataloader(self) -> list[DataLoader]:
        # Under DDP each rank scores its own shard and the metrics sum their states over ranks,
        # so every image counts once, as in one process (Lightning's DistributedSampler would pad
        # an uneven set with repeats; the Trainer defaults turn it off).
        rank, world = _rank_and_world()
        return [
            DataLoader(
                TensorDataset(self.test_inputs[name][rank::world]),
                batch_size=self.hparams.batch_size,
            )
            for name in self.test_set_names
        ]
