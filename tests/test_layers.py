"""The house rules: models and data stand alone (usable from a notebook with nothing of the
app), and one run's results are the same before and after a refactor."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Trainer
from torch.utils.data import DataLoader, TensorDataset

from datamodules import SingleExampleDataModule
from identity_crisis.cli import main
from lightning_modules import CNN

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
# What each standalone package must not import: the app, and each other.
FORBIDDEN = {
    "lightning_modules": ("identity_crisis", "datamodules"),
    "datamodules": ("identity_crisis", "lightning_modules"),
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute names (relative imports count as the package's)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(path.parent.name if node.level else node.module or "")
    return names


def forbidden_imports(package: Path, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(package.parent)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_models_and_data_import_neither_the_app_nor_each_other(package):
    assert forbidden_imports(REPO / package, FORBIDDEN[package]) == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_the_layer_check_fails_when_a_crossing_import_is_added(package, tmp_path):
    copy = tmp_path / package
    shutil.copytree(REPO / package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for forbidden in FORBIDDEN[package]:
        (copy / "crossing.py").write_text(f"from {forbidden}.x import y\n")
        assert forbidden_imports(copy, FORBIDDEN[package]) == [
            f"{package}/crossing.py imports {forbidden}.x"
        ]


def test_a_notebook_trains_and_tests_with_models_and_data_alone(data_root):
    torch.manual_seed(0)
    model = CNN(depth=1, channels=1, lr=3e-2, optimizer="adam")
    data = SingleExampleDataModule(root=str(data_root), download=False, test_sets=["mnist"])
    trainer = Trainer(max_steps=300, logger=False, enable_checkpointing=False, min_epochs=0)
    trainer.fit(model, data)
    # Any loader of (inputs,) batches: scores under set<i> when the model has no names for them.
    digits = data.test_inputs["mnist"] if data.test_inputs else None
    if digits is None:
        data.setup("test")
        digits = data.test_inputs["mnist"]
    loaders = [DataLoader(TensorDataset(digits[:16]), batch_size=8)]
    (scores,) = trainer.test(model, dataloaders=loaders, verbose=False)
    assert scores["test/set0/identity_corr"] > 0.99  # a 1-layer CNN learns the identity


# The runs recorded in tests/golden before the house was rebuilt (issue 10): same seed, same
# metrics.json: every key, count and word exactly, every float to 1e-5.
GOLDEN_RUNS = {
    "cnn": ["configs/cnn.yaml", "--model.depth=2", "--model.channels=8", "--trainer.min_steps=0"],
    "fcn": ["configs/fcn.yaml", "--model.depth=2", "--model.width=32"],
}


# Keys metrics.json gained after the golden files were recorded (issue 16: layer activity).
ADDED_SINCE_GOLDEN = ("layers",)


@pytest.mark.parametrize("family", sorted(GOLDEN_RUNS))
def test_metrics_are_those_recorded_before_the_refactor(family, data_root, tmp_path, capsys):
    config, *args = GOLDEN_RUNS[family]
    run_dir = tmp_path / family
    main(
        ["fit", "--config", config, *args, "--trainer.max_steps=60", "--data.test_size=8"]
        + [f"--data.root={data_root}", f"--run.dir={run_dir}"]
    )
    golden = GOLDEN / f"metrics_{family}_depth2.json"
    # Later issues add keys (the per-layer activity); everything recorded stays the same.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    added = {key: metrics.pop(key) for key in ADDED_SINCE_GOLDEN if key in metrics}
    assert added, "the added keys are written"
    recorded = json.loads(golden.read_text())
    # The same keys in the same order, the same counts and words; floats to 1e-5, far above
    # what the thread count or the CPU's vector width moves (the last 1-2 digits of a float32
    # sum, about 1e-7 here) and far below what a changed computation gives.
    got, want = flat_items(metrics), flat_items(recorded)
    assert list(got) == list(want)
    floats = [key for key, value in want.items() if isinstance(value, float)]
    assert {k: v for k, v in got.items() if k not in floats} == {
        k: v for k, v in want.items() if k not in floats
    }
    assert [got[k] for k in floats] == pytest.approx([want[k] for k in floats], rel=1e-5, abs=1e-6)


def flat_items(record: dict, prefix: str = "") -> dict:
    """{'metrics.test/mnist/identity_corr': 0.93, ...}: nested dicts and lists as dotted keys,
    for approx."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flat_items(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat.update(flat_items(dict(enumerate(value)), f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Facts the output depends on, each defined once: a second definition could disagree with the
# first (it did: verdict colours, the fit threshold).
ONE_HOME = {
    "VERDICTS": "lightning_modules/metrics.py",
    "FRACTIONS": "lightning_modules/metrics.py",
    "VERDICT_COLOURS": "identity_crisis/verdict.py",
    "DEFAULT_FIT_THRESHOLD": "lightning_modules/base.py",
    "DEFAULT_VERDICT_THRESHOLD": "lightning_modules/metrics.py",
    "HEADLINE_TEST_SETS": "datamodules/single_example.py",
    "RESULT_NEUTRAL_KEYS": "identity_crisis/run_folder.py",
    "SAME_EXPERIMENT_KEYS": "identity_crisis/run_folder.py",
    "TEST_PREFIX": "lightning_modules/metrics.py",
}
# Values that give a second definition away under any name: the headline sets spelled out, a
# key that changes no result listed again, a short name mapped again.
TELLTALE_LITERALS = {
    "HEADLINE_TEST_SETS": re.compile(
        r"""["']fashion["'],\s*["']patterns["'],\s*["']gaussian_noise["']"""
    ),
    "RESULT_NEUTRAL_KEYS": re.compile(r"""["']trainer\.enable_progress_bar["']"""),
    "SAME_EXPERIMENT_KEYS": re.compile(r"""["']trainer\.num_nodes["']"""),
    "SHORT_NAMES": re.compile(
        r"""["'](model\.)?(depth|channels|kernel_size|width)["']:\s*["']\w+["']"""
    ),
}
SHORT_NAMES_HOMES = (
    "lightning_modules/base.py",
    "lightning_modules/cnn.py",
    "lightning_modules/fcn.py",
)
SOURCES = ("identity_crisis", "lightning_modules", "datamodules")


def module_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def definitions(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for package in SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            for name in module_level_names(path) & set(ONE_HOME):
                found.setdefault(name, []).append(path.relative_to(root).as_posix())
    return found


def score_keys_built_by_hand(root: Path) -> list[str]:
    """Places whose code spells "test/..." itself instead of metrics.score_key (docstrings may
    name the format)."""
    found = []
    for package in SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "metrics.py":
                continue
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.JoinedStr) and node.values:
                    node = node.values[0]
                elif id(node) in docstrings:
                    continue
                if isinstance(node, ast.Constant) and str(node.value).startswith("test/"):
                    found.append(f"{path.relative_to(root).as_posix()}:{node.lineno}")
    return sorted(set(found))


def test_each_fact_the_output_depends_on_has_one_home():
    assert definitions(REPO) == {name: [home] for name, home in ONE_HOME.items()}
    assert score_keys_built_by_hand(REPO) == []
    homes = {**ONE_HOME, "SHORT_NAMES": SHORT_NAMES_HOMES}
    assert telltales(REPO) == {
        name: sorted(set(home) if isinstance(home, tuple) else {home})
        for name, home in homes.items()
        if name in TELLTALE_LITERALS
    }


def telltales(root: Path) -> dict[str, list[str]]:
    """Where each fact's telltale literal is spelled out."""
    found: dict[str, set[str]] = {}
    for package in SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text()
            for name, pattern in TELLTALE_LITERALS.items():
                if pattern.search(text):
                    found.setdefault(name, set()).add(path.relative_to(root).as_posix())
    return {name: sorted(paths) for name, paths in found.items()}


def test_the_one_home_check_fails_on_a_second_definition(tmp_path):
    for package in SOURCES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    extra = tmp_path / "identity_crisis" / "again.py"
    extra.write_text(
        'VERDICT_COLOURS = {"identity": "tab:green"}\nKEY = f"test/{s}/x"\n'
        'SETS = ("mnist", "fashion", "patterns", "gaussian_noise")\nSHORT = {"model.depth": "d"}\n'
    )
    assert definitions(tmp_path)["VERDICT_COLOURS"] == [
        "identity_crisis/again.py",
        "identity_crisis/verdict.py",
    ]
    assert score_keys_built_by_hand(tmp_path) == ["identity_crisis/again.py:2"]
    found = telltales(tmp_path)
    assert "identity_crisis/again.py" in found["HEADLINE_TEST_SETS"]
    assert "identity_crisis/again.py" in found["SHORT_NAMES"]
