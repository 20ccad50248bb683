"""The `identity-crisis` command: every subcommand in one place, and a help that imports nothing
heavy, so it answers at once.

    identity-crisis --help                      # the subcommands, one line each
    identity-crisis <command> --help            # one subcommand's options
"""

from __future__ import annotations

import importlib
import sys

from identity_crisis.errors import disk_error
from identity_crisis.tracking import EnvFileError, load_env_file

# name: (the module whose main(argv) runs it, one line of help). fit and test are LightningCLI
# subcommands and take the whole command line; the others take what follows their name.
COMMANDS = {
    "fit": ("identity_crisis.cli", "train a net on one image, then probe it on every test set"),
    "test": ("identity_crisis.cli", "re-probe a trained run's weights.ckpt, without training"),
    "sweep": (
        "identity_crisis.sweep_command",
        "run a W&B sweep file offline: cells, locks, reruns",
    ),
    "agent": ("identity_crisis.wandb_agent", "a W&B sweep agent training each run in-process"),
    "report": ("identity_crisis.report", "tables and figures from run folders or a W&B sweep"),
    "theory": ("identity_crisis.theory", "check trained 1-layer nets against the closed forms"),
    "init-signal": (
        "identity_crisis.init_signal",
        "how much of its input an untrained net passes on, per init and depth",
    ),
}
LIGHTNING_COMMANDS = ("fit", "test")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: identity-crisis <command> [options]   (identity-crisis <command> --help)",
        "",
        "Train a network on ONE image, then ask what it learned: the identity or the constant.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `identity-crisis` console command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        print(f"\nidentity-crisis: error: unknown command {argv[0]!r}", file=sys.stderr)
        sys.exit(2)
    # Every command reads `.env` (IDC_DATA_DIR, W&B settings) the same way, before its own
    # defaults are computed from the environment.
    try:
        load_env_file()
    except EnvFileError as error:
        print(f"identity-crisis: error: {error}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        module.main(argv if argv[0] in LIGHTNING_COMMANDS else argv[1:])
    except OSError as error:
        # A full or read-only disk under sweep, report or theory: what and where, in one line
        # (every file is written through a temporary that is removed on the error).
        if (message := disk_error(error)) is None:
            raise
        print(f"identity-crisis {argv[0]}: error: {message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
