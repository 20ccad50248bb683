"""`identity-crisis agent`: the in-process path for W&B sweeps. `wandb.agent` calls a function per
run, in this process, that trains the run's values through the same `fit` code as a cell of the
offline runner (identity_crisis.cell_run); the imports are paid once.

    identity-crisis agent ENTITY/PROJECT/ID sweeps/fig2_fcn.yaml [--count N] [--key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from identity_crisis.cell_processes import OVERRIDE, in_process_argv
from identity_crisis.cell_run import run_cell

SWEEP_PARAM_PATH = "WANDB_SWEEP_PARAM_PATH"  # where `wandb.agent` writes a run's values


def agent_params(path: str | os.PathLike) -> dict:
    """A run's values from the file `wandb.agent` writes for it: `key: {value: v}` per key."""
    import yaml

    config = yaml.safe_load(Path(path).read_text()) or {}
    return {
        key: entry["value"]
        for key, entry in config.items()
        if key != "wandb_version" and isinstance(entry, dict) and "value" in entry
    }


def agent_argv(sweep, params: dict, extra_args: list[str]) -> list[str]:
    """`["fit", ...]` for a run's values: the sweep file's command filled as `wandb agent` and the
    offline runner fill it, then the extra `--key=value` arguments. ValueError for a command that
    is not this project's `fit`."""
    from identity_crisis.cli import wandb_args
    from identity_crisis.sweep_file import fill_command

    argv = in_process_argv(fill_command(sweep, params))
    if argv is None:
        raise ValueError(
            f"{sweep.path}: its command does not run this project's `fit` with this Python; "
            "use `wandb agent` (the command path)"
        )
    return wandb_args([*argv, *extra_args])


class CellCrashed(RuntimeError):
    """A cell ended in a way that may leave this process unclean: the agent stops."""


def agent_cell(sweep, extra_args: list[str]) -> None:
    """What `wandb.agent` calls for each run: its values, from the file the agent wrote, trained
    by `fit` in this process. The CLI's W&B logger starts the run the agent set up (its id and
    sweep are in the environment), named and filed as a `wandb agent` command's run is. A
    failed run (diverged, a bad value) is recorded failed and the agent goes on; a crash or an
    interrupt raises CellCrashed, which stops the agent (max_consecutive_failed_runs=1)."""
    argv = agent_argv(sweep, agent_params(os.environ[SWEEP_PARAM_PATH]), extra_args)
    code, clean = run_cell(argv)
    if not clean:
        raise CellCrashed(f"the run ended with exit code {code}; this process stops")


def parse_agent_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="identity-crisis agent",
        description="A W&B sweep agent that trains each run in this process (imports paid once). "
        "Extra --section.key=value arguments go to every run.",
        allow_abbrev=False,
    )
    parser.add_argument("sweep_id", help="entity/project/id, as `wandb sweep` prints it")
    parser.add_argument("sweep_file", help="the sweep YAML given to `wandb sweep`")
    parser.add_argument("--count", type=int, default=None, help="runs to train, then stop")
    args, extra = parser.parse_known_args(argv)
    if args.count is not None and args.count < 1:
        parser.error(f"--count={args.count} is not valid; it must be >= 1")
    wrong = next((arg for arg in extra if not OVERRIDE.match(arg)), None)
    if wrong is not None:
        parser.error(f"unrecognized argument {wrong!r}: give --section.key=value overrides")
    args.extra = extra
    return args


def main(argv: list[str] | None = None) -> None:
    """`identity-crisis agent SWEEP_ID SWEEP_FILE [--count N] [--key=value ...]`: `wandb.agent`
    with a function. Needs the W&B server and a key, as `wandb agent` does; run it from the
    project root. Exit codes: 0 the agent stopped (count reached, sweep over, Ctrl-C); 1 a run
    crashed and stopped it; 2 a bad command line or sweep file."""
    from identity_crisis.errors import ConfigError
    from identity_crisis.sweep_file import load_sweep

    args = parse_agent_args(sys.argv[1:] if argv is None else argv)
    try:
        sweep = load_sweep(args.sweep_file)
        agent_argv(sweep, {key: None for key in sweep.parameters}, args.extra)
    except (ConfigError, ValueError) as error:
        print(f"identity-crisis agent: error: {error}", file=sys.stderr)
        sys.exit(2)
    import wandb

    crashed = []

    def function() -> None:
        try:
            agent_cell(sweep, args.extra)
        except CellCrashed:
            crashed.append(True)
            raise

    wandb.agent(args.sweep_id, function=function, count=args.count, max_consecutive_failed_runs=1)
    sys.exit(1 if crashed else 0)
