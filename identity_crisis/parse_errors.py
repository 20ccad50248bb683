"""jsonargparse's parse errors of `fit` and `test`, said in the project's words: one line that
names the option, the value given and what would be valid (`user_error`)."""

from __future__ import annotations

import importlib
import inspect
import re

from jsonargparse import ArgumentError

from datamodules.errors import DataConfigError
from identity_crisis.errors import ConfigError
from identity_crisis.options import given_value
from lightning_modules.base import IdentityTaskModule
from lightning_modules.errors import ModelConfigError

# A bad value, from whichever layer checks it (one line and exit 2, no traceback): the project's
# own checks raise these, and their message is already the line to show.
USER_ERRORS = (ConfigError, ModelConfigError, DataConfigError)


def user_error(error: BaseException, argv: list[str] = ()) -> str | None:
    """The one-line message of a user error (a bad value or option), None for anything else.

    Checks in code raise one of USER_ERRORS, which jsonargparse may wrap while instantiating; its
    parse errors (unknown option, wrong type) arrive as ArgumentError and are cut down to the line
    that names the option.
    """
    seen = error
    while seen is not None:
        if isinstance(seen, USER_ERRORS):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    if not isinstance(error, ArgumentError):
        return None
    text = str(error)
    # The one message that names the model class; see PARSER_KEY for why this is a regex.
    unknown = re.search(r"class_path '([\w.]+)':\s+Option '(\w+)' is not accepted", text)
    if unknown:
        return _unknown_model_option(*unknown.groups())
    return _type_error(text, argv) or (
        text.splitlines()[0] if "Given value" in text else " ".join(text.split())
    )


def _unknown_model_option(class_path: str, option: str) -> str:
    module, name = class_path.rsplit(".", 1)
    if name == IdentityTaskModule.__name__:
        # The base class stands in when no family was chosen: the option is fine, the model
        # is what is missing.
        return (
            f"--model.{option} needs a model family, and none was chosen; give --config "
            "configs/cnn.yaml (or fcn.yaml, resnet.yaml) or --model=CNN (FCN, ResidualCNN) first"
        )
    valid = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    base = inspect.signature(IdentityTaskModule).parameters
    linked = ("self", "kwargs", "image_shape", "test_set_names")
    options = [p for p in dict.fromkeys([*valid, *base]) if p not in linked]
    return f"--model.{option} is not an option of {name}; valid: {', '.join(options)}"


# jsonargparse names the failing key (nested under "model" for a class's argument) and says
# what the type wants; these pick out the key, the value and the rule, nothing else. They stay
# regexes because its ArgumentError carries the message alone (no key, value or type), and the
# type of a --model.* key is known only once the family is chosen, in the same parse that
# failed; the app's own commands avoid them by trying each option alone (options.CommandParser).
PARSER_KEY = re.compile(r'Parser key "([\w.]+)"')
RESTRICTION = re.compile(r"Not of type \w+: (.*?)\s*does not conform to restriction (.+)")
LITERAL = re.compile(r"Expected a typing\.Literal\[(.+?)\]\. Got value: (.*)")
GIVEN = re.compile(r"Given value: (?:NestedArg\(key='\w+', val=)?'?([^'\n]*?)'?\)?$", re.M)
NOT_OF_TYPE = re.compile(r"Not of type (\w+): (.+)")
EXPECTED = re.compile(r"Expected a <class '(\w+)'>")


def _type_error(text: str, argv: list[str] = ()) -> str | None:
    """'--model.depth=0 is not valid; it must be > 0' from a typed argument's parse error."""
    keys = PARSER_KEY.findall(text)
    if not keys:
        return None
    option = keys[-1] if "." in keys[-1] or len(keys) == 1 else f"{keys[0]}.{keys[-1]}"
    given = GIVEN.search(text)
    given = given.group(1).strip() if given else ""
    if not given:  # some messages leave the value out; the command line has it
        given = _last_given(argv, option)
    if restriction := RESTRICTION.search(text):
        value, rule = restriction.groups()
        value = value or given
        rule = re.sub(r"\s*(>=|<=|>|<)\s*", r" \1 ", rule.replace("v", "")).strip()
        return f"--{option}={value} is not valid; it must be {rule}"
    if literal := LITERAL.search(text):
        choices, value = literal.groups()
        choices = ", ".join(c.strip(" '") for c in choices.split(","))
        return f"--{option}={value.strip()} is not valid; choose one of {choices}"
    if not_of_type := NOT_OF_TYPE.search(text):
        kind, why = not_of_type.groups()
        shown = f"--{option}={given}" if given else f"--{option}"
        # jsonargparse stops at the first bad copy of a repeated key; its reason would name
        # a value other than the one shown.
        why = f" ({why.strip()})" if not given or given in why else ""
        return f"{shown} is not valid; expected a {kind}{why}"
    expected = [t for t in EXPECTED.findall(text) if t != "NoneType"]
    if expected:
        return f"--{option}={given} is not valid; expected {' or '.join(expected)}"
    return None


def _last_given(argv: list[str], option: str) -> str:
    """The value of `--option` on the command line, '' when it is not given (see given_value)."""
    return given_value(argv, f"--{option}") or ""
