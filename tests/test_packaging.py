"""What the project takes from outside: its dependency bounds and pins, its license metadata, and
the W&B argument formatting that sweep_file.py reproduces instead of importing."""

import importlib
import json
import random
import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from identity_crisis.sweep_file import (
    ARGS_MACROS,
    DEFAULT_COMMAND,
    args_macros,
    expand_envvars,
    fill_command,
    load_sweep,
)

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the bounds are the same on 3.10

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
WANDB_UTILS = "wandb.sdk.launch.sweeps.utils"


def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def requirements() -> list[Requirement]:
    spec = project()
    listed = spec["project"]["dependencies"] + spec["project"]["optional-dependencies"]["dev"]
    return [Requirement(r) for r in listed]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = version
    return pins


# --- dependencies --------------------------------------------------------------------------------
def test_every_version_bound_in_pyproject_says_why():
    """A bound with no comment right above it is one nobody can safely move."""
    lines = PYPROJECT.read_text().splitlines()
    bounded = [
        i
        for i, line in enumerate(lines)
        if re.match(r'\s*(requires(-python)? = )?\[?\s*"[^"]*[<>=]=?[^"]*"', line)
    ]
    assert len(bounded) >= len(requirements()) + 1, "the bounded lines were not all found"
    unexplained = [lines[i].strip() for i in bounded if not lines[i - 1].lstrip().startswith("#")]
    assert not unexplained, f"bounds without a comment above them: {unexplained}"


def test_constraints_pin_every_dependency_inside_its_bounds():
    pins = constraints()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_constraints_name_no_local_package_or_path():
    text = (REPO / "constraints.txt").read_text()
    assert "pip install -c constraints.txt" in text, "the header says how to use the file"
    assert "identity-crisis" not in constraints() and "identity_crisis" not in text.lower()
    assert not re.search(r"^\s*(-e|--editable|/|file:)", text, re.MULTILINE)


def test_the_license_is_declared_as_pep_639_and_shipped():
    spec = project()
    assert spec["project"]["license"] == "MIT"
    assert spec["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert (
        text.startswith("MIT License") and "Copyright (c) 2026 identity-crisis contributors" in text
    )
    # PEP 639 metadata is read from setuptools 77 on; an older one rejects the string form.
    (build,) = [Requirement(r) for r in spec["build-system"]["requires"] if "setuptools" in r]
    assert not build.specifier.contains("76.1.0") and build.specifier.contains("77.0.0")


# --- W&B argument formatting ---------------------------------------------------------------------
SCALARS = [
    0,
    1,
    -3,
    10**20,
    0.1,
    1e-05,
    1.0,
    -0.0,
    2.5e300,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
    False,
    None,
    "",
    "adam",
    "a b",
    "x=y",
    "--flag",
    "ünï ☃",
    "${args}",
    "'quoted'",
]
VALUES = SCALARS + [
    [],
    [1, 2],
    ["a", None, True, 0.5],
    {},
    {"a": 1, "b": [2.5, None]},
    {"nested": {"x": False}},
]


def random_params(rng: random.Random, count: int) -> dict:
    keys = ["lr", "model.depth", "model.init_args.lr", "data.train_class", "x", "a_b", "seed"]
    return {f"{rng.choice(keys)}{i}": rng.choice(VALUES) for i in range(count)}


PARAM_SETS = (
    [{}]
    + [{"model.depth": value} for value in VALUES]
    + [dict(zip([f"k{i}" for i in range(len(VALUES))], VALUES, strict=True))]
    + [random_params(random.Random(seed), 1 + seed % 7) for seed in range(40)]
)


def test_argument_macros_follow_wandbs_rules_without_wandb():
    """The rules, written out: they hold whether or not wandb is installed."""
    params = {
        "model.depth": 3,
        "model.lr": 1e-05,
        "data.train_class": None,
        "run.keep_weights": False,
        "run.replace": True,
        "run.tags": ["a", "b"],
        "x": {"k": 1},
    }
    macros = args_macros(params)
    assert macros["args"] == [
        "--model.depth=3",
        "--model.lr=1e-05",
        "--data.train_class=None",
        "--run.keep_weights=False",
        "--run.replace=True",
        "--run.tags=['a', 'b']",
        "--x={'k': 1}",
    ]
    assert macros["args_no_hyphens"] == [a.removeprefix("--") for a in macros["args"]]
    assert macros["args_no_equals"][:4] == ["--model.depth", "3", "--model.lr", "1e-05"]
    assert macros["args_no_boolean_flags"][3:5] == ["--run.replace", "--run.tags=['a', 'b']"]
    assert macros["args_append_hydra"][0] == "+model.depth=3"
    assert macros["args_override_hydra"][0] == "++model.depth=3"
    assert json.loads(macros["args_json"][0]) == params
    assert set(macros) == set(ARGS_MACROS) - {"args_json_file"}


def test_envvar_macros_are_filled_inside_words(monkeypatch, tmp_path):
    monkeypatch.setenv("IDC_TEST_ROOT", "/data root")
    monkeypatch.delenv("IDC_TEST_UNSET", raising=False)
    word = "--data.root=${envvar:IDC_TEST_ROOT}/${envvar:IDC_TEST_UNSET}"
    assert expand_envvars(word) == "--data.root=/data root/IDC_TEST_UNSET"
    assert expand_envvars("${envvar:lower}") == "${envvar:lower}"  # not a macro for W&B either
    path = tmp_path / "s.yaml"
    command = ["${env}", "${interpreter}", "${program}", "${envvar:IDC_TEST_ROOT}", "${args}"]
    command += ["${args_json_file}", "${nonsense}"]
    spec = {"program": "p.py", "method": "grid", "parameters": {"a": {"value": 1}}}
    path.write_text(yaml.safe_dump({**spec, "command": command}))
    command = fill_command(load_sweep(path), {"a": 1}, tmp_path / "args.json")
    assert command[1:] == [
        sys.executable,
        "p.py",
        "/data root",
        "--a=1",
        str(tmp_path / "args.json"),
        "${nonsense}",
    ]


@pytest.fixture(scope="module")
def wandb_utils():
    """W&B's own formatting, when wandb is installed. A wandb without it fails here on purpose:
    the sweeps still run (the project formats its own commands), but nothing then shows that
    they are still formatted as an agent of that wandb would format them."""
    wandb = pytest.importorskip("wandb")
    try:
        return importlib.import_module(WANDB_UTILS)
    except ImportError as error:
        pytest.fail(
            f"wandb {wandb.__version__} has no module {WANDB_UTILS} ({error}): find where its "
            "agent now formats ${args} and point this test there, then compare the rules"
        )


@pytest.mark.parametrize("params", PARAM_SETS, ids=lambda p: f"{len(p)}-keys")
def test_argument_macros_match_wandbs_own_function(wandb_utils, params):
    theirs = wandb_utils.create_sweep_command_args(
        {"args": {k: {"value": v} for k, v in params.items()}}
    )
    ours = args_macros(params)
    # args_dict is the dict itself, for W&B's launch jobs; an agent's command has no use for it.
    assert set(theirs) - {"args_dict"} == set(ours), "W&B's set of argument macros changed"
    for name, words in ours.items():
        assert words == theirs[name], f"${{{name}}} for {params}"


def test_envvar_expansion_and_default_command_match_wandb(wandb_utils, monkeypatch):
    monkeypatch.setenv("IDC_TEST_A", "alpha")
    monkeypatch.delenv("IDC_TEST_B", raising=False)
    words = ["${envvar:IDC_TEST_A}", "x${envvar:IDC_TEST_B}y${envvar:IDC_TEST_A}", "${env}", "7"]
    words += ["${envvar:lower}", "${envvar:}", "$IDC_TEST_A"]
    theirs = wandb_utils.create_sweep_command(list(words))
    assert [expand_envvars(w) for w in words] == theirs
    assert DEFAULT_COMMAND == wandb_utils.DEFAULT_SWEEP_COMMAND
