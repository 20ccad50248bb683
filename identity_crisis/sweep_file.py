"""A W&B sweep file as the offline runner reads it: loading and checking the YAML against W&B's
rules and this project's conventions, expanding it into cells (the grid, or seeded random draws),
naming each cell's folder, and filling the file's `command` as a W&B agent fills it.

The runner that runs the cells lives in `identity_crisis.sweep`; import these names from here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from identity_crisis.errors import ConfigError

TOP_LEVEL_KEYS = {
    "name",
    "description",
    "program",
    "command",
    "method",
    "metric",
    "parameters",
    "early_terminate",
    "run_cap",
    "project",
    "entity",
    "controller",
    "job",
    "image_uri",
}
METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = {
    "constant": {"value"},
    "categorical": {"values", "probabilities"},
    "int_uniform": {"min", "max"},
    "uniform": {"min", "max"},
    "q_uniform": {"min", "max", "q"},
    "log_uniform_values": {"min", "max"},
    "q_log_uniform_values": {"min", "max", "q"},
    "inv_log_uniform_values": {"min", "max"},
    "normal": {"mu", "sigma"},
    "q_normal": {"mu", "sigma", "q"},
    "log_normal": {"mu", "sigma"},
    "q_log_normal": {"mu", "sigma", "q"},
}
ARGS_MACROS = (
    "args",
    "args_no_hyphens",
    "args_no_equals",
    "args_no_boolean_flags",
    "args_json",
    "args_json_file",
    "args_append_hydra",
    "args_override_hydra",
)
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
DEFAULT_OUT = "runs/sweeps"


class SweepError(ConfigError):
    """A sweep file that cannot run; the message names the file, the key and what is valid."""


@dataclass
class Sweep:
    path: Path
    name: str
    method: str
    parameters: dict[str, dict]
    command: list[str]
    program: str | None = None
    run_cap: int | None = None
    metric: dict = field(default_factory=dict)
    description: str = ""


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and check a sweep file against W&B's rules (top-level keys, method, parameter forms)
    and this project's conventions (flat dotted names, an args macro in the command)."""
    path = Path(path)
    if path.is_dir():
        raise SweepError(f"sweep file {str(path)!r} is a folder; give a sweep YAML file in it")
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: a sweep file is a mapping of keys, got {type(spec).__name__}")

    def fail(message: str):
        raise SweepError(f"{path}: {message}")

    unknown = sorted(set(spec) - TOP_LEVEL_KEYS)
    if unknown:
        fail(f"unknown top-level key(s) {unknown}; valid: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    method = spec.get("method")
    if method not in METHODS:
        fail(f"method={method!r} is not valid; choose one of {', '.join(METHODS)}")
    metric = spec.get("metric") or {}
    if metric and (not isinstance(metric, dict) or "name" not in metric):
        fail("metric needs a name (and optionally goal: minimize | maximize)")
    if metric.get("goal", "minimize") not in ("minimize", "maximize"):
        fail(f"metric goal={metric['goal']!r} is not valid; choose minimize or maximize")
    parameters = spec.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        fail("parameters must be a non-empty mapping of dotted config keys")
    for key, value in parameters.items():
        _check_parameter(fail, method, key, value)
    command = spec.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, str | int | float) for c in command):
        fail("command must be a list of strings")
    command = [str(c) for c in command]
    if not any(c.strip("${}") in ARGS_MACROS for c in command):
        fail(f"command has no arguments macro; put ${{args}} (or one of {ARGS_MACROS}) in it")
    program = spec.get("program")
    if "${program}" in command and not program:
        fail("command uses ${program} but the file sets no program")
    run_cap = spec.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        fail(f"run_cap={run_cap!r} is not valid; it must be a positive integer")
    return Sweep(
        path=path,
        name=str(spec.get("name") or path.stem),
        method=method,
        parameters=parameters,
        command=command,
        program=program,
        run_cap=run_cap,
        metric=metric,
        description=str(spec.get("description") or ""),
    )


def _check_parameter(fail, method: str, key, value) -> None:
    if not isinstance(key, str) or not key:
        fail(f"parameter name {key!r} must be a non-empty string")
    if not isinstance(value, dict):
        fail(f"parameter {key}: expected a mapping with value, values or distribution")
    if "parameters" in value:
        fail(f"parameter {key}: nested parameters are not used here; write flat dotted names")
    fields = {"value", "values", "distribution", "min", "max", "mu", "sigma", "q", "probabilities"}
    if set(value) - fields:
        fail(f"parameter {key}: unknown field(s) {sorted(set(value) - fields)}")
    distribution = value.get("distribution")
    if distribution is not None:
        if distribution not in DISTRIBUTIONS:
            fail(
                f"parameter {key}: distribution={distribution!r} is not valid; "
                f"choose one of {', '.join(DISTRIBUTIONS)}"
            )
        missing = DISTRIBUTIONS[distribution] - set(value) - {"probabilities", "q"}
        if missing:
            fail(f"parameter {key}: distribution {distribution} needs {sorted(missing)}")
    elif "value" in value and "values" in value:
        fail(f"parameter {key}: give value or values, not both")
    elif not ({"value", "values"} & set(value) or {"min", "max"} <= set(value)):
        fail(f"parameter {key}: give value, values, a distribution, or min and max; got {value}")
    if "values" in value and (not isinstance(value["values"], list) or not value["values"]):
        fail(f"parameter {key}: values must be a non-empty list")
    if method == "grid" and not ("value" in value or "values" in value):
        fail(f"parameter {key}: a grid sweep needs value or values, not a distribution")


def _sample(spec: dict, rng: random.Random):
    if "value" in spec:
        return spec["value"]
    lo, hi = spec.get("min"), spec.get("max")
    # W&B's inference when no distribution is named: a list is categorical, int bounds uniform ints.
    inferred = "int_uniform" if isinstance(lo, int) and isinstance(hi, int) else "uniform"
    distribution = spec.get("distribution", "categorical" if "values" in spec else inferred)
    q = spec.get("q", 1)
    if distribution == "categorical":
        return rng.choices(spec["values"], weights=spec.get("probabilities"))[0]
    if distribution == "int_uniform":
        return rng.randint(lo, hi)
    if distribution in ("uniform", "q_uniform"):
        x = rng.uniform(lo, hi)
    elif distribution in ("log_uniform_values", "q_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    elif distribution == "inv_log_uniform_values":
        x = 1 / math.exp(rng.uniform(math.log(1 / hi), math.log(1 / lo)))
    elif distribution in ("normal", "q_normal"):
        x = rng.gauss(spec["mu"], spec["sigma"])
    else:  # log_normal, q_log_normal
        x = math.exp(rng.gauss(spec["mu"], spec["sigma"]))
    return round(x / q) * q if distribution.startswith("q_") else x


def expand(sweep: Sweep, seed: int = 0) -> list[dict]:
    """The sweep's cells in order: the grid's cartesian product (file order, last key fastest),
    or `run_cap` random draws seeded with `seed` (distinct draws only)."""
    keys = list(sweep.parameters)
    if sweep.method == "grid":
        choices = [
            spec["values"] if "values" in spec else [spec["value"]]
            for spec in sweep.parameters.values()
        ]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]
    if sweep.method == "bayes":
        raise SweepError(f"{sweep.path}: bayes sweeps need the W&B server; use wandb sweep")
    if sweep.run_cap is None:
        raise SweepError(f"{sweep.path}: a random sweep needs run_cap to run offline")
    rng, cells, seen = random.Random(seed), [], set()
    for _ in range(sweep.run_cap * 100):
        if len(cells) == sweep.run_cap:
            break
        cell = {key: _sample(spec, rng) for key, spec in sweep.parameters.items()}
        fingerprint = json.dumps(cell, sort_keys=True, default=str)
        if fingerprint not in seen:
            seen.add(fingerprint)
            cells.append(cell)
    return cells


def cell_id(params: dict, overrides: Sequence[str] = ()) -> str:
    """A folder name that says the cell's values and stays the same when the file is reordered.

    The hash covers the values and the runner's extra `--key=value` overrides (in order: the
    later of two wins), so a smoke test (`--trainer.max_steps=10`) gets folders of its own and
    never marks the real cells done. Without overrides the hash is that of the values alone, as
    before overrides counted."""
    readable = "-".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in params.items())
    readable = "".join(c if c.isalnum() or c in "=._-" else "_" for c in readable)[:80]
    identity = {"params": params, "overrides": list(overrides)} if overrides else params
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return f"{readable}-{digest[:8]}"


# How a W&B agent turns one run's values into its command, owned here rather than imported: the
# functions that do it (wandb.sdk.launch.sweeps.utils, wandb_agent.Agent._command_run) are
# private and may move or change in any release. tests/test_packaging.py compares these rules
# with wandb's own function whenever it is importable.
ENVVAR_MACRO = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")


def args_macros(params: dict) -> dict[str, list[str]]:
    """The argument macros of a W&B command for these values, by W&B's rules: each value is
    written with Python's str() (None as `None`, a bool as `True`/`False`, a list as `[1, 2]`, a
    dict as `{'a': 1}`), as `--key=value` in `${args}`, `key=value` in `${args_no_hyphens}`, two
    arguments `--key value` in `${args_no_equals}`, `+key=value` and `++key=value` for Hydra;
    `${args_no_boolean_flags}` writes a true bool as a bare `--key` and leaves a false one out;
    `${args_json}` is one argument, json.dumps of all the values."""
    macros: dict[str, list[str]] = {name: [] for name in ARGS_MACROS if name != "args_json_file"}
    for key, value in params.items():
        flag = f"{key}={value}"
        macros["args"].append(f"--{flag}")
        macros["args_no_hyphens"].append(flag)
        macros["args_no_equals"] += [f"--{key}", str(value)]
        macros["args_append_hydra"].append(f"+{flag}")
        macros["args_override_hydra"].append(f"++{flag}")
        if not isinstance(value, bool):
            macros["args_no_boolean_flags"].append(f"--{flag}")
        elif value:
            macros["args_no_boolean_flags"].append(f"--{key}")
    macros["args_json"] = [json.dumps(dict(params))]
    return macros


def expand_envvars(chunk: str) -> str:
    """`${envvar:NAME}` anywhere in a command word becomes $NAME, or the bare NAME when it is not
    set (W&B's rule; only upper-case names, digits and `_` are macros)."""
    return ENVVAR_MACRO.sub(lambda match: os.environ.get(match[1], match[1]), chunk)


def fill_command(sweep: Sweep, params: dict, args_json_file: Path | None = None) -> list[str]:
    """The command a W&B agent would run for these values: a word that is a whole macro is
    replaced by its words, `${envvar:NAME}` inside any word by the variable. Unlike the agent,
    ${interpreter} is this Python (the same environment runs the cell), and a `${...}` that is
    no macro stays as written, so the cell fails on it rather than silently losing a word.
    ${args_json_file} becomes the `args_json_file` path; the agent writes ${args_json} there,
    and so does the offline runner (each cell's `args.json`)."""
    macros = args_macros(params)
    macros["interpreter"] = [sys.executable]
    macros["program"] = [sweep.program] if sweep.program else []
    macros["env"] = ["/usr/bin/env"] if os.name != "nt" else []
    if args_json_file is not None:
        macros["args_json_file"] = [str(args_json_file)]
    filled = []
    for chunk in map(expand_envvars, sweep.command):
        name = chunk[2:-1] if chunk.startswith("${") and chunk.endswith("}") else None
        filled += macros.get(name, [chunk])
    return filled
