"""The command lines of the app's own commands (sweep, report, theory, init-signal), parsed by
jsonargparse as `fit`'s is: the same option names, the same list syntax (`--depths [5,20]`, as
`fit` takes `--run.tags=[a,b]`; one bare value is a list of one), typed options.

A value its type refuses is said in the project's words (the option, the value given, what would
be valid), not jsonargparse's: the library's wording changes between releases, and it names the
type, not the setting."""

from __future__ import annotations

import argparse

from jsonargparse import ArgumentError, ArgumentParser, DefaultHelpFormatter

from identity_crisis.errors import ConfigError


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (each option's type and default), with an epilog kept as written."""


class CommandParser(ArgumentParser):
    """A command's parser: `option` adds a typed option with what would be valid, `parse` returns
    the values as an argparse.Namespace or raises ConfigError with a one-line message."""

    def __init__(self, prog: str, description: str, **kwargs):
        # Errors come back as exceptions: `parse` says them in one line.
        super().__init__(prog=prog, description=description, exit_on_error=False, **kwargs)
        self.valid: dict[str, tuple[tuple[str, ...], object, str]] = {}
        self.listed: list[str] = []

    def option(
        self, *names: str, valid: str | None = None, as_list: bool = False, **kwargs
    ) -> None:
        """An option; a value its type refuses is said as '<name>=<value> is not valid; <valid>'.
        With `as_list`, one bare value of a type like `list[int] | int` is a list of one."""
        action = self.add_argument(*names, **kwargs)
        if valid is not None:
            self.valid[names[0]] = (names, kwargs["type"], valid)
        if as_list:
            self.listed.append(action.dest)

    def parse(self, argv: list[str]) -> argparse.Namespace:
        argv = list(argv)
        try:
            parsed = self.parse_args(argv)
        except ArgumentError as error:
            # An unknown option or a missing argument: jsonargparse's one line is the clearest.
            raise ConfigError(self.refused(argv) or " ".join(str(error).split())) from None
        args = argparse.Namespace(**parsed.as_dict())
        for dest in self.listed:
            value = getattr(args, dest)
            if value is not None and not isinstance(value, list):
                setattr(args, dest, [value])
        return args

    def refused(self, argv: list[str]) -> str | None:
        """The message for the first given option whose value its type refuses, None if none:
        each is tried alone against its own type, so no message text is read."""
        for names, kind, valid in self.valid.values():
            for name in names:
                given = given_value(argv, name)
                if given is not None and not accepts(kind, given):
                    return f"{names[0]}={given or repr(given)} is not valid; {valid}"
        return None


def accepts(kind, value: str) -> bool:
    """Whether jsonargparse parses `value` as a `kind`, as it would on the command line."""
    probe = ArgumentParser(exit_on_error=False)
    probe.add_argument("--value", type=kind)
    try:
        probe.parse_args([f"--value={value}"])
    except ArgumentError:
        return False
    return True


def given_value(argv: list[str], option: str) -> str | None:
    """The value of `option` (say '--model.depth') on the command line, the last one when it is
    given more than once (the one that wins, and in a sweep cell the override after the file's
    value); None when it is not given."""
    positions = [i for i, a in enumerate(argv) if a == option or a.startswith(f"{option}=")]
    if not positions:
        return None
    last = argv[positions[-1]]
    return last.split("=", 1)[1] if "=" in last else (argv[positions[-1] + 1 :] or [""])[0]
