"""Run a W&B sweep file without a W&B server: the offline sweep runner.

    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --dry-run        # list the cells
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml                  # all CPU cores, 1 thread each
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --gpus 0,1 --per-gpu 4
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --limit 3 --out runs/sweeps

It reads the same YAML `wandb sweep` reads, expands the grid (or draws `run_cap` seeded random
cells), fills the file's own `command` as a W&B agent fills it, and runs each cell as a
subprocess with WANDB_MODE=offline and the sweep's name as the W&B group. Run it from the
project root (the commands name `configs/...` and `identity_crisis/cli.py` relative to it).

Each cell gets `<out>/<sweep>/<cell>/`: `log.txt`, the run folder `run/`, and `done.json` once it
finished with a result or `failed.json` (exit code, reason, log) otherwise. A rerun skips done
cells and retries failed ones; Ctrl-C stops the children and records nothing as done.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from identity_crisis import run_folder
from identity_crisis.errors import ConfigError
from identity_crisis.run_folder import CELL_FAILED, CELL_LOG, CELL_RUN

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


def cell_id(params: dict) -> str:
    """A folder name that says the cell's values and stays the same when the file is reordered."""
    readable = "-".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in params.items())
    readable = "".join(c if c.isalnum() or c in "=._-" else "_" for c in readable)[:80]
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    return f"{readable}-{digest[:8]}"


def fill_command(sweep: Sweep, params: dict, args_json_file: Path | None = None) -> list[str]:
    """The command a W&B agent would run for these values, built with W&B's own formatting of
    the argument macros; ${interpreter} is this Python, so the same environment runs it."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    macros["interpreter"] = [sys.executable]
    macros["program"] = [sweep.program] if sweep.program else []
    macros["env"] = ["/usr/bin/env"] if os.name != "nt" else []
    if args_json_file is not None:
        macros["args_json_file"] = [str(args_json_file)]
    filled = []
    for chunk in create_sweep_command(list(sweep.command)):
        if chunk.startswith("${") and chunk.endswith("}") and chunk[2:-1] in macros:
            filled += macros[chunk[2:-1]]
        else:
            filled.append(chunk)
    return filled


@dataclass
class Cell:
    index: int
    params: dict
    folder: Path

    @property
    def done(self) -> bool:
        return run_folder.cell_done(self.folder)


class OfflineRunner:
    """Runs the cells of one sweep on local slots: `per_gpu` processes on each GPU, or
    `workers` CPU processes of one thread each."""

    def __init__(
        self,
        sweep: Sweep,
        out: str | os.PathLike = DEFAULT_OUT,
        gpus: list[str] | None = None,
        per_gpu: int = 1,
        workers: int | None = None,
        limit: int | None = None,
        seed: int = 0,
        extra_args: list[str] | None = None,
    ):
        self.sweep = sweep
        self.root = Path(out) / sweep.name
        self.cells = [
            Cell(i, params, self.root / cell_id(params))
            for i, params in enumerate(expand(sweep, seed))
        ]
        if gpus:
            self.slots = [{"CUDA_VISIBLE_DEVICES": g} for g in gpus for _ in range(per_gpu)]
        else:
            threads = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            self.slots = [dict(threads) for _ in range(workers or os.cpu_count() or 1)]
        self.limit = limit
        self.extra_args = list(extra_args or [])
        self._check_paths()

    def _check_paths(self) -> None:
        """A command that names a missing file fails every cell; say so once, before starting."""
        command = self.sweep.command
        named = [self.sweep.program] if "${program}" in command else []
        named += [command[i + 1] for i, c in enumerate(command[:-1]) if c in ("--config", "-c")]
        for name in named:
            if name and not Path(name).exists():
                raise SweepError(
                    f"{self.sweep.path}: the command names {name!r}, which does not exist "
                    f"from {Path.cwd()}; run the sweep from the project root"
                )

    def command(self, cell: Cell) -> list[str]:
        filled = fill_command(self.sweep, cell.params, cell.folder / "args.json")
        # Later arguments win: each cell writes into its own folder, grouped by the sweep.
        return filled + [
            f"--run.dir={cell.folder / CELL_RUN}",
            f"--run.group={self.sweep.name}",
            *self.extra_args,
        ]

    def plan(self) -> tuple[list[Cell], list[Cell]]:
        done = [c for c in self.cells if c.done]
        todo = [c for c in self.cells if not c.done]
        return todo[: self.limit] if self.limit is not None else todo, done

    def run(self, poll_s: float = 0.2) -> dict[str, int]:
        todo, skipped = self.plan()
        print(
            f"sweep {self.sweep.name}: {len(self.cells)} cells, {len(skipped)} done before, "
            f"{len(todo)} to run on {len(self.slots)} slot(s) -> {self.root}",
            flush=True,
        )
        counts = {"done": 0, "skipped": len(skipped), "failed": 0, "interrupted": 0}
        queue, running = list(todo), {}
        try:
            while queue or running:
                for slot in range(len(self.slots)):
                    if slot not in running and queue:
                        running[slot] = self._start(queue.pop(0), self.slots[slot])
                time.sleep(poll_s)
                for slot, (proc, cell, started, log) in list(running.items()):
                    if proc.poll() is not None:
                        log.close()
                        del running[slot]
                        ok = self._finish(cell, proc.returncode, time.time() - started)
                        counts["done" if ok else "failed"] += 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the running cells ...", flush=True)
            for proc, cell, _, log in running.values():
                _stop(proc)
                log.close()
                self._record_failure(cell, proc.returncode, "interrupted (Ctrl-C)")
            counts["interrupted"] = len(running) + len(queue)
        self._summary(counts)
        return counts

    def _start(self, cell: Cell, slot_env: dict):
        cell.folder.mkdir(parents=True, exist_ok=True)
        command = self.command(cell)
        env = {**os.environ, **slot_env, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
        # A W&B service started by whoever launched the runner (a notebook, a test) is advertised
        # in WANDB_SERVICE; a cell attached to it dies with it and hangs on Ctrl-C. Each cell
        # starts its own.
        env.pop("WANDB_SERVICE", None)
        log = run_folder.open_cell_log(cell.folder, shlex.join(command))
        print(f"[{cell.index + 1}/{len(self.cells)}] start {cell.folder.name}", flush=True)
        # A session of its own: Ctrl-C reaches the runner, which stops the children in order.
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=default_sigint,
        )
        return proc, cell, time.time(), log

    def _finish(self, cell: Cell, returncode: int, seconds: float) -> bool:
        status = run_folder.read_status(cell.folder / CELL_RUN)
        if returncode == 0 and status == run_folder.OK:
            run_folder.write_cell_done(cell.folder, cell.params, seconds)
            print(f"[{cell.index + 1}/{len(self.cells)}] done  {cell.folder.name}", flush=True)
            return True
        reason = f"exit code {returncode}, run status {status}"
        self._record_failure(cell, returncode, reason)
        print(
            f"[{cell.index + 1}/{len(self.cells)}] FAILED {cell.folder.name}: {reason}; "
            f"log: {cell.folder / CELL_LOG}",
            flush=True,
        )
        return False

    def _record_failure(self, cell: Cell, returncode: int | None, reason: str) -> None:
        run_folder.write_cell_failed(cell.folder, cell.params, returncode, reason)

    def _summary(self, counts: dict[str, int]) -> None:
        print(
            f"sweep {self.sweep.name}: {counts['done']} done, {counts['skipped']} skipped "
            f"(done before), {counts['failed']} failed, {counts['interrupted']} interrupted",
            flush=True,
        )
        for cell in self.cells:
            if (cell.folder / CELL_FAILED).is_file():
                print(f"  failed: {cell.folder.name}  (log: {cell.folder / CELL_LOG})")
        print(f"upload to W&B with: wandb sync {self.root}/*/{CELL_RUN}/wandb/offline-run-*")


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGINT to the child's whole process group (Lightning then shuts down cleanly and the
    run records itself as interrupted), SIGKILL if it has not exited after `grace_s`."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="identity-crisis sweep",
        description="Run a W&B sweep file offline, one subprocess per cell.",
    )
    parser.add_argument("sweep_file", help="a sweep YAML, e.g. sweeps/fig3_cnn_depth.yaml")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--gpus", default="", help="comma-separated GPU ids, e.g. 0,1")
    parser.add_argument("--per-gpu", type=int, default=1, help="runs at once on each GPU")
    parser.add_argument(
        "--workers", type=int, default=None, help="CPU runs at once (default: cores)"
    )
    parser.add_argument("--limit", type=int, default=None, help="run at most this many cells")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random sweep's draws")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and commands")
    args, extra = parser.parse_known_args(argv)
    for name in ("per_gpu", "workers", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}={value} is not valid; it must be >= 1")
    if any(not arg.startswith("--") for arg in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # passed on to every cell, e.g. --trainer.max_steps=10
    return args


def main(argv: list[str] | None = None) -> None:
    """`identity-crisis sweep FILE [options] [--key=value ...]`; extra --key=value arguments are
    appended to every cell's command (they win over the sweep's values)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sweep = load_sweep(args.sweep_file)
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
        runner = OfflineRunner(
            sweep, args.out, gpus, args.per_gpu, args.workers, args.limit, args.seed, args.extra
        )
    except ConfigError as error:
        print(f"identity-crisis sweep: error: {error}", file=sys.stderr)
        sys.exit(2)
    if args.dry_run:
        todo, done = runner.plan()
        for cell in runner.cells:
            mark = "done" if cell in done else ("todo" if cell in todo else "later")
            print(f"{cell.index:4d} {mark:5s} {shlex.join(runner.command(cell))}")
        print(f"{len(runner.cells)} cells: {len(done)} done, {len(todo)} would run")
        return
    counts = runner.run()
    sys.exit(1 if counts["failed"] or counts["interrupted"] else 0)


def default_sigint() -> None:
    """In a cell, before exec: SIGINT back to its default. A launcher that ignores it (a
    background job, a process whose Lightning run was interrupted) passes that on, and the cell
    would ignore the SIGINT the runner sends it to stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
