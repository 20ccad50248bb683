"""A run folder's and a sweep cell's files, read without trusting them. The readers of
`run_folder` are the contract (what a run writes); these check, on top, that what is there is what
`report` can use: text that decodes, JSON objects and YAML mappings, fields of the right types,
archives and images that open. Every reader raises `BadFile`, whose message names the file and
what is wrong with it; `load_local` makes that run broken and the figures make it a note, so one
bad folder never stops a report."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from identity_crisis import run_folder
from lightning_modules import option_defaults

# LightningCLI's name for the seed: the one key that tells the runs of a configuration apart.
SEED_KEY = "seed_everything"
# The one other config value `report` computes with (the "not fitted" wording).
FIT_THRESHOLD_KEY = "model.fit_threshold"


class BadFile(ValueError):
    """A file of a run folder or a sweep cell that is there but cannot be used."""

    def __init__(self, name: str, what: str):
        super().__init__(f"{name}: {what}")


def is_number(value) -> bool:
    """A finite number. Runs write NaN and infinities as null (strict JSON, jsonio.to_json);
    Python's json reads the NaN and Infinity literals, which no run writes."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def type_name(value) -> str:
    """A value's type as JSON and YAML call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names = {str: "string", list: "list", dict: "mapping"}
    return next((w for t, w in names.items() if isinstance(value, t)), type(value).__name__)


def describe(value) -> str:
    """'the string "no"', 'a list [1, 2]': a wrong value, short."""
    if value is None:
        return "null"
    text = json.dumps(value, default=str)
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = type_name(value)
    return f"{'the' if kind == 'string' else 'a'} {kind} {text}"


def error_text(error: Exception, path: Path) -> str:
    """An exception in a few words: its type and message, the file's path shortened to its name
    (the problem already names the run folder), at most 120 characters."""
    text = f"{type(error).__name__}: {error}".replace(str(path), path.name)
    return text if len(text) <= 120 else text[:117] + "..."


def read_text(path: Path) -> str:
    """A file as UTF-8 text; BadFile when it cannot be read or is not text (a binary file)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadFile(path.name, f"cannot be read ({error.strerror or error})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = data[error.start]
        raise BadFile(
            path.name, f"not text (byte 0x{byte:02x} at offset {error.start} is not UTF-8)"
        ) from None


def read_json_object(path: Path) -> dict:
    text = read_text(path)
    if not text.strip():
        raise BadFile(path.name, "empty")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise BadFile(path.name, f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise BadFile(path.name, f"not a JSON object but {describe(value)}")
    return value


# --- metrics.json --------------------------------------------------------------------------------
# The fields `report` reads and what each may hold, as RunSummary and write_failure write them
# (null: not known, as NaN is written). Only status is required: a failed run has no scores.
METRICS_FIELDS = {
    "status": (lambda v: isinstance(v, str), "a string"),
    "error": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "fitted": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "train/final_loss": (lambda v: v is None or is_number(v), "a finite number or null"),
    "model/params": (
        lambda v: v is None or (is_number(v) and float(v).is_integer()),
        "an integer or null",
    ),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
}


def read_metrics(folder: Path) -> dict:
    """metrics.json, checked: an object with a status, each field of its type, numeric scores."""
    summary = read_json_object(Path(folder) / run_folder.METRICS)
    if "status" not in summary:
        raise BadFile(run_folder.METRICS, "no status")
    for key, (valid, wanted) in METRICS_FIELDS.items():
        if key in summary and not valid(summary[key]):
            raise BadFile(run_folder.METRICS, f'"{key}" is {describe(summary[key])}, not {wanted}')
    for key, value in summary.get("metrics", {}).items():
        if not (value is None or is_number(value)):
            raise BadFile(
                run_folder.METRICS,
                f'"metrics" / "{key}" is {describe(value)}, not a finite number or null',
            )
    return summary


# --- config.yaml and the swept values of a cell --------------------------------------------------
def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def init_args_problem(tree: dict, prefix: str = "") -> str | None:
    """LightningCLI nests a class's arguments in a mapping under init_args; anything else there
    cannot be flattened into the command-line names."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if key == "init_args" and not isinstance(value, dict):
            return f"{name} is {describe(value)}, not a mapping"
        if isinstance(value, dict):
            found = init_args_problem(value, f"{name}.")
            if found:
                return found
    return None


def config_problem(config: dict) -> str | None:
    """What is wrong with the values `report` computes with, in a flat config or a cell's
    params: the seed (grouped and sorted by) and the fit threshold (printed as a number)."""
    seed = config.get(SEED_KEY)
    if not (seed is None or isinstance(seed, int)):
        return f"{SEED_KEY} is {describe(seed)}, not an integer"
    threshold = config.get(FIT_THRESHOLD_KEY)
    if not (threshold is None or is_number(threshold)):
        return f"{FIT_THRESHOLD_KEY} is {describe(threshold)}, not a finite number"
    return None


def read_config(folder: Path) -> dict | None:
    """config.yaml under the dotted command-line names (run_folder.read_config), checked; None
    when there is none."""
    path = Path(folder) / run_folder.CONFIG
    if not path.exists():
        return None
    text = read_text(path)
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadFile(run_folder.CONFIG, f"not valid YAML ({yaml_problem(error)})") from None
    if not isinstance(tree, dict):
        what = "empty" if tree is None else f"not a mapping but {describe(tree)}"
        raise BadFile(run_folder.CONFIG, what)
    problem = init_args_problem(tree)
    config = run_folder.flatten_config(tree) if problem is None else {}
    problem = problem or config_problem(config)
    if problem:
        raise BadFile(run_folder.CONFIG, problem)
    # A run made before a model option existed ran with its default: it groups with runs that
    # give that default outright (a net trained before model.init_gain with one at gain 1).
    defaults = option_defaults(config.get("model.class_path", ""))
    return {**{f"model.{key}": value for key, value in defaults.items()}, **config}


def read_cell_record(cell: Path, name: str) -> dict | None:
    """done.json or failed.json, checked (an object; params, when there, a mapping of usable
    values); None when absent."""
    path = Path(cell) / name
    if not path.exists():
        return None
    record = read_json_object(path)
    params = record.get("params", {})
    if not isinstance(params, dict):
        raise BadFile(name, f'"params" is {describe(params)}, not an object')
    problem = config_problem(params)
    if problem:
        raise BadFile(name, f'"params": {problem}')
    return record


def read_cell_command(cell: Path) -> str | None:
    """The command on the first line of the cell's log (run_folder.read_cell_command)."""
    try:
        return run_folder.read_cell_command(cell)
    except OSError as error:
        raise BadFile(run_folder.CELL_LOG, f"cannot be read ({error.strerror or error})") from None


def is_cell(folder: Path, filenames: list[str]) -> bool:
    """run_folder.is_cell; a log that cannot be read counts as a cell's (a problem to name)."""
    try:
        return run_folder.is_cell(folder, filenames)
    except OSError:
        return True


# --- the pictures: probe predictions and hidden maps --------------------------------------------
# The probe arrays the prediction grid draws: (probes, channels, height, width), grey or RGB.
PREDICTION_ARRAYS = ("inputs", "outputs")


def read_predictions(path: str | Path) -> dict | None:
    """A probe_predictions.npz (a run folder or the file) as a dict of arrays, checked to be
    drawable; None when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / run_folder.PROBE_PREDICTIONS
    if not path.exists():
        return None
    try:
        if not zipfile.is_zipfile(path):  # else numpy would try it as a pickle
            raise BadFile(path.name, "not an .npz archive (no zip directory: truncated?)")
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except BadFile:
        raise
    except Exception as error:  # a corrupt archive raises whatever zipfile, zlib or numpy meet
        raise BadFile(path.name, f"not a readable .npz ({error_text(error, path)})") from None
    for key in PREDICTION_ARRAYS:
        array = arrays.get(key)
        if array is None:
            raise BadFile(path.name, f'no "{key}" array')
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise BadFile(path.name, f'"{key}" holds {array.dtype}, not numbers')
        if array.ndim != 4 or array.shape[1] not in (1, 3) or 0 in array.shape:
            raise BadFile(
                path.name,
                f'"{key}" has shape {array.shape}, not (probes, 1 or 3 channels, height, width)',
            )
    return arrays


def read_png(path: Path) -> Image.Image | None:
    """An image as RGB, fully decoded (so a truncated file fails here); None when absent."""
    if not path.exists():
        return None
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... by format
        raise BadFile(path.name, f"not a readable image ({error_text(error, path)})") from None


def picture_problems(folder: Path) -> list[str]:
    """The run folder's pictures read as the figures read them: what is wrong with each."""
    problems = []
    for name in (run_folder.PROBE_PREDICTIONS, run_folder.HIDDEN_INIT, run_folder.HIDDEN_TRAINED):
        reader = read_predictions if name == run_folder.PROBE_PREDICTIONS else read_png
        try:
            reader(Path(folder) / name)
        except BadFile as error:
            problems.append(str(error))
    return problems
