"""Errors of the app's own commands (sweep, report, theory, init-signal) that the command line
turns into a one-line message instead of a traceback. The model families and the data module
raise their own (`lightning_modules.errors`, `datamodules.errors`)."""

import argparse


class ConfigError(ValueError):
    """A value the user gave cannot work; the message names it and what would be valid."""


def check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(
            f"{name}={value!r} is not valid; choose one of {', '.join(map(str, valid))}"
        )


def check_positive(name: str, value, minimum: int | float = 1) -> None:
    if value is None or value < minimum:
        raise ConfigError(f"{name}={value!r} is not valid; it must be >= {minimum}")


def int_list(text: str) -> list[int]:
    """argparse type of a comma-separated integer list ('7,14,20'); argparse names the option."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; give integers separated by commas, like 7,14,20"
        ) from None
