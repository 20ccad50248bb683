"""`identity-crisis sweep FILE [options]`: the command line of the offline sweep runner.

    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --dry-run        # list the cells
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml                  # every GPU, else every CPU
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --gpus [0,1] --per-gpu 4
    identity-crisis sweep sweeps/fig3_cnn_depth.yaml --limit 3 --trainer.max_steps=10  # smoke test

What the runner does, its files and its exit codes: identity_crisis.sweep.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path
from typing import Literal

from jsonargparse.typing import PositiveFloat, PositiveInt

from identity_crisis import preflight
from identity_crisis.cell_processes import OVERRIDE
from identity_crisis.errors import ConfigError
from identity_crisis.locks import LOCK_FILE, STALE_S, TAKEOVER_ENV, takeover_seconds
from identity_crisis.options import CommandParser
from identity_crisis.slots import choose_gpus
from identity_crisis.sweep import OfflineRunner
from identity_crisis.sweep_file import DEFAULT_OUT, load_sweep


def sweep_parser() -> tuple[CommandParser, dict[str, bool]]:
    """The runner's parser, and its flags in order with whether each takes a value: they tell
    the runner's arguments from the overrides for every cell, and the error for an unknown
    argument names them."""
    parser = CommandParser(
        prog="identity-crisis sweep",
        description="Run a W&B sweep file offline: a worker process per slot trains its cells one "
        "after another. Extra --section.key=value arguments go to every cell "
        "(e.g. --trainer.max_steps=10).",
        allow_abbrev=False,
    )
    flags = {"--help": False}

    def flag(name: str, **kwargs) -> None:
        flags[name] = kwargs.get("action") != "store_true"
        parser.option(name, **kwargs)

    parser.option("sweep_file", type=str, help="a sweep YAML, e.g. sweeps/fig3_cnn_depth.yaml")
    flag("--out", type=str, default=DEFAULT_OUT, help="the folder of the sweep's cells")
    flag(
        "--gpus",
        type=list[int | str] | int | Literal["none", "cpu"] | None,
        default=None,
        help="GPU ids, e.g. [0,1] or 0, or none for CPU (default: every GPU this process can see, "
        "from CUDA_VISIBLE_DEVICES or torch; CPU workers when there is none)",
        valid="give GPU ids as a list, e.g. [0,1], one id, e.g. 0, or none for CPU",
    )
    positive = "give an integer >= 1"
    flag("--per-gpu", type=PositiveInt, default=1, help="runs at once on each GPU", valid=positive)
    flag(
        "--workers",
        type=PositiveInt | None,
        default=None,
        help="CPU runs at once, one thread each (default: the CPUs this process may use)",
        valid=positive,
    )
    flag("--limit", type=PositiveInt | None, help="run at most this many cells", valid=positive)
    flag(
        "--seed",
        type=int,
        default=0,
        help="seed of a random sweep's draws",
        valid="give an integer",
    )
    flag("--dry-run", action="store_true", help="list the cells and commands")
    flag(
        "--isolate",
        action="store_true",
        help="a process of its own for every cell (each pays the imports and start-up again) "
        "instead of a worker per slot",
    )
    flag(
        "--takeover-s",
        type=PositiveFloat | None,
        default=None,
        metavar="SECONDS",
        help="take over a cell whose runner on another host has written no heartbeat for this "
        f"long (default ${TAKEOVER_ENV}, else {STALE_S:.0f}); a runner on this host that is gone "
        "is taken over at once",
        valid="give a positive number of seconds",
    )
    return parser, flags


def split_overrides(argv: list[str], flags: dict[str, bool]) -> tuple[list[str], list[str]]:
    """The runner's own arguments, and the --section.key=value overrides for every cell. Anything
    else is refused here, naming the runner's flags: jsonargparse's message would not say that
    the rest must be overrides."""
    runner, extra = [], []
    value_next = False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if value_next or name in flags or name == "-h":
            runner.append(arg)
            value_next = not value_next and flags.get(name, False) and "=" not in arg
        elif OVERRIDE.match(arg):
            extra.append(arg)
        elif not arg.startswith("-") and all(a.startswith("-") for a in runner):
            runner.append(arg)  # the sweep file
        else:
            raise ConfigError(
                f"unrecognized argument {arg!r}: the runner's flags are {', '.join(flags)}; "
                "anything else must be a --section.key=value override for every cell "
                "(e.g. --trainer.max_steps=10) or --seed_everything=N"
            )
    return runner, extra


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The runner's options, or one line and exit 2."""
    parser, flags = sweep_parser()
    try:
        runner, extra = split_overrides(list(argv), flags)
        args = parser.parse(runner)
        args.takeover_s = takeover_seconds(args.takeover_s)
    except (ConfigError, ValueError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    # slots.choose_gpus takes the ids as CUDA_VISIBLE_DEVICES spells them.
    if isinstance(args.gpus, list):
        args.gpus = ",".join(map(str, args.gpus))
    elif args.gpus is not None:
        args.gpus = str(args.gpus)
    args.extra = extra  # passed on to every cell, e.g. --trainer.max_steps=10
    return args


def main(argv: list[str] | None = None) -> None:
    """`identity-crisis sweep FILE [options] [--key=value ...]`; extra --key=value arguments are
    appended to every cell's command (they win over the sweep's values)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sweep = load_sweep(args.sweep_file)
        preflight.check_non_empty_path("--out", args.out)
        preflight.check_writable(Path(args.out), "--out")
        gpus = choose_gpus(args.gpus, args.workers)
        runner = OfflineRunner(
            sweep,
            args.out,
            gpus,
            args.per_gpu,
            args.workers,
            args.limit,
            args.seed,
            args.extra,
            isolate=args.isolate,
            takeover_s=args.takeover_s,
        )
        runner.check()
    except ConfigError as error:
        print(f"identity-crisis sweep: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C while checking: nothing started
        sys.exit(128 + signal.SIGINT)
    if args.dry_run:
        todo, done = runner.plan()
        for cell in runner.cells:
            mark = "done" if cell in done else "todo" if cell in todo else "later"
            if mark != "done" and (cell.folder / LOCK_FILE).exists():
                mark = "held"  # a runner has it now (or had it, if that runner was killed)
            print(f"{cell.index:4d} {mark:5s} {shlex.join(runner.command(cell))}")
        print(f"{len(runner.cells)} cells: {len(done)} done, {len(todo)} would run")
        return
    counts = runner.run()
    if counts["signal"]:
        sys.exit(128 + counts["signal"])
    sys.exit(1 if counts["failed"] or counts["interrupted"] or counts["undone"] else 0)
