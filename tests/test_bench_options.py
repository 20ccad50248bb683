"""The benchmark's command line takes the app's list syntax and refuses a bad value in one line
that names it and what would be valid."""

import re
import sys
from pathlib import Path

import pytest

from identity_crisis.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_speed  # noqa: E402 - a script's module, found on the path set above


def test_sections_are_a_list_as_fit_takes_lists_and_one_bare_value_is_a_list_of_one():
    parse = bench_speed.command_parser().parse
    assert parse(["--sections", "[1,3]"]).sections == [1, 3]
    assert parse(["--sections=2", "--quick"]).sections == [2]
    assert parse([]).sections == [1, 2, 3, 4] and parse([]).clock == "wall"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sections", "[1,5]"], "--sections=[1,5] is not valid; give sections from 1-4"),
        (["--device", "tpu"], "--device=tpu is not valid; choose one of cpu, cuda"),
        (["--threads", "0"], "--threads=0 is not valid; give an integer >= 1"),
    ],
)
def test_a_bad_value_is_named_with_what_would_be_valid(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        bench_speed.command_parser().parse(argv)
