"""The closed-form theory of single-layer nets trained on one image, checked against trained nets.

    identity-crisis theory                                # FCN, and CNN k = 1,3,5,7,9,11,15,21,29
    identity-crisis theory --kernels [1,3,5] --data.test_size 50 --out runs/theory-small
    identity-crisis theory --momentum 0                   # plain gradient descent
    identity-crisis theory --help

Theory (docs: paper.md, "Theory (single-layer nets)"), for the training image x^ of H*W pixels:

* a 1-layer linear FCN f(x) = W x trained by gradient descent from W0 converges to
  W* = W0 + (x^ - W0 x^) x^T / |x^|^2, i.e. f(x) = (<x^, x> / |x^|^2) x^ + W0 (I - x^ x^T/|x^|^2) x;
* a 1-layer CNN with one k x k kernel w (zero padding k//2) outputs P(x) w, P(x) the (H*W, k^2)
  matrix of the image's zero-padded k x k patches. Gradient descent from w0 converges to
  w* = delta + Pi_N (w0 - delta) (delta the centre-one kernel, N the null space of P(x^)): the
  exact identity when the patches of x^ span R^{k^2} (rank k^2); otherwise the error on an input
  x is P(x) Pi_N (w0 - delta).

The checks train the project's own modules (FCN / CNN, depth 1, linear, no bias, PyTorch's
default init, SGD) with a Lightning Trainer in float64 from the very weights the prediction
starts from, and compare. Learning rate and step count come from the spectrum of the training
loss (see `gd_hyperparameters` and `steps_needed`). With momentum 0 the error
along a direction of loss curvature lambda shrinks by |1 - lr lambda| per step, so the step count
grows with the condition number of P(x^)^T P(x^) restricted to its row space: about 10^3 steps
at k = 5 but millions at k = 29. Rows that do not reach the limit within `--max-steps` are
flagged, never passed off as converged; they are still compared with the exact step-t iterate of
gradient descent (column `err GD(t)`). `--momentum auto` (the command's default) uses heavy-ball
momentum tuned from the spectrum: its updates also stay in the span of the gradients, so the
limit is the same, and it needs about sqrt(condition number) times fewer steps.

It prints an FCN table, a CNN table and the smallest kernel size at which the identity stops
being exact, writes `theory.json` and `theory.md` into `--out` (default runs/theory), and ends
with `report: <path>`. Exit codes: 0 done; 1 training failed (diverged); 2 bad arguments or
missing data (one line, nothing ran).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Literal

from jsonargparse.typing import OpenUnitInterval, PositiveInt

from datamodules import SingleExampleDataModule
from datamodules.errors import DataConfigError
from datamodules.single_example import HEADLINE_TEST_SETS
from identity_crisis import preflight
from identity_crisis.errors import ConfigError, check_positive
from identity_crisis.options import CommandParser
from identity_crisis.theory.checks import (
    CONVERGED,
    DEFAULT_KERNELS,
    DEFAULT_MAX_STEPS,
    DEFAULT_TOL,
    check_cnn,
    check_fcn,
)
from identity_crisis.theory.closed_form import (
    RANK_RTOL,
    _check_kernel_size,
    _image,
    cnn_limit,
    cnn_predicted_error,
    delta_kernel,
    deviation_mse,
    error_factors,
    fcn_limit,
    fcn_prediction,
    gd_hyperparameters,
    identity_threshold,
    null_space_projector,
    patch_matrix,
    patch_rank,
    steps_needed,
)
from identity_crisis.theory.output import (
    _notes,
    _settings_line,
    cnn_table,
    fcn_table,
    format_table,
    markdown_table,
    threshold_line,
    write_report,
)
from lightning_modules.errors import TrainingFailed

__all__ = [
    "CONVERGED",
    "DEFAULT_KERNELS",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_OUT",
    "DEFAULT_TOL",
    "RANK_RTOL",
    "THEORY_TEST_SETS",
    "check_cnn",
    "check_fcn",
    "check_kernels",
    "cnn_limit",
    "cnn_predicted_error",
    "cnn_table",
    "delta_kernel",
    "deviation_mse",
    "error_factors",
    "fcn_limit",
    "fcn_prediction",
    "fcn_table",
    "format_table",
    "gd_hyperparameters",
    "identity_threshold",
    "main",
    "markdown_table",
    "null_space_projector",
    "parse_args",
    "patch_matrix",
    "patch_rank",
    "run",
    "steps_needed",
    "threshold_line",
    "write_report",
]

# The test sets the report scores (a few kinds of input: digits, clothes, synthetic patterns,
# noise); the checks use whatever sets their data module holds.
THEORY_TEST_SETS = HEADLINE_TEST_SETS
# Next to the other commands' outputs (runs/sweeps, runs/report): runs/ is git-ignored.
DEFAULT_OUT = "runs/theory"
# The widest kernel that still reaches across a 28 x 28 image from every pixel.
MAX_KERNEL = 2 * 28 - 1


# --- the command ------------------------------------------------------------------------------
def check_kernels(kernels: list[int]) -> list[int]:
    """The kernel sizes, each odd and at most MAX_KERNEL, once each; ConfigError otherwise."""
    if not kernels:
        raise ConfigError(
            "--kernels=[] is not valid; give at least one odd kernel size, e.g. [1,3,5]"
        )
    shown = f"[{','.join(map(str, kernels))}]"
    for k in kernels:
        try:
            _check_kernel_size(k)
        except ConfigError as error:
            raise ConfigError(f"--kernels={shown}: {error}") from None
        if k > MAX_KERNEL:
            # Beyond it the extra weights never meet the image, and the SVD of the k^2-column
            # patch matrix alone outgrows any memory (k = 1001: 8 TB).
            raise ConfigError(
                f"--kernels={shown}: kernel size {k} is not valid; it must be at most "
                f"{MAX_KERNEL} (2 x 28 - 1: a larger kernel's outer weights never meet a "
                "28 x 28 image)"
            )
    return list(dict.fromkeys(kernels))


def command_parser() -> CommandParser:
    parser = CommandParser(
        prog="identity-crisis theory",
        description="Check the closed-form theory of 1-layer FCNs and CNNs against trained nets.",
    )
    parser.option(
        "--kernels",
        type=list[int] | int,
        as_list=True,
        default=list(DEFAULT_KERNELS),
        help="odd CNN kernel sizes, a list like [1,3,5]",
        valid="give odd kernel sizes as a list, e.g. [1,3,5]",
    )
    parser.option(
        "--data.root",
        dest="data_root",
        type=str | None,
        default=None,
        help="data root (default $IDC_DATA_DIR)",
    )
    parser.option(
        "--data.test_size",
        "--test-size",
        dest="test_size",
        type=int,
        default=100,
        help="images per test set",
        valid="give an integer >= 1",
    )
    parser.option("--out", type=str, default=DEFAULT_OUT, help="report folder")
    parser.option(
        "--replace", action="store_true", help="write over an earlier theory report in --out"
    )
    parser.option(
        "--seed_everything",
        "--seed",
        dest="seed",
        type=int,
        default=0,
        help="seed of the initial weights",
        valid="give an integer",
    )
    parser.option(
        "--momentum",
        type=Literal[0, "auto"],
        default="auto",
        help="auto (heavy ball tuned from the spectrum, default: every k reaches its limit) or 0 "
        "(plain gradient descent: large kernels stop short of the limit within --max-steps)",
        valid="choose one of 0, auto",
    )
    parser.option(
        "--max-steps",
        type=PositiveInt,
        default=DEFAULT_MAX_STEPS,
        help="most SGD steps per CNN",
        valid="give an integer >= 1",
    )
    parser.option(
        "--tol",
        type=OpenUnitInterval,
        default=DEFAULT_TOL,
        help="relative kernel error the step rule aims at",
        valid="it must be in (0, 1)",
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options, typed and checked before anything runs; ConfigError names a bad one."""
    args = command_parser().parse(argv)
    args.kernels = check_kernels(args.kernels)
    check_positive("--data.test_size", args.test_size)
    preflight.check_seed(args.seed)
    preflight.check_non_empty_path("--out", args.out)
    preflight.check_image_memory(
        f"{len(THEORY_TEST_SETS)} test sets",
        f"--data.test_size={args.test_size}",
        args.test_size * len(THEORY_TEST_SETS),
        (1, 28, 28),
    )
    args.momentum = 0.0 if args.momentum == 0 else "auto"
    return args


def run(args: argparse.Namespace) -> dict:
    start = time.monotonic()
    data = SingleExampleDataModule(
        root=args.data_root, download=False, test_size=args.test_size, test_sets=THEORY_TEST_SETS
    )
    fcn = check_fcn(data, seed=args.seed)
    cnn = check_cnn(
        data,
        args.kernels,
        args.seed,
        None,
        momentum=args.momentum,
        tol=args.tol,
        max_steps=args.max_steps,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    x = _image(data.train_images[0])
    first_checked = next((r["k"] for r in cnn if not r["exact_identity"]), None)
    return {
        "train": f"{data.hparams.train_dataset} {data.hparams.train_split} index "
        f"{data.train_indices[0]} (class {data.hparams.train_class})",
        "pixels": x.numel(),
        "settings": {
            "kernels": args.kernels,
            "seed": args.seed,
            "momentum": args.momentum,
            "steps": None,
            "max_steps": args.max_steps,
            "tol": args.tol,
            "test_size": args.test_size,
            "test_sets": list(THEORY_TEST_SETS),
        },
        "fcn": fcn,
        "cnn": cnn,
        "identity_threshold": identity_threshold(x),
        "first_inexact_checked": first_checked,
        "runtime_s": time.monotonic() - start,
    }


def main(argv: list[str] | None = None) -> None:
    """`identity-crisis theory [options]`: see the module docstring."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else list(argv))
        preflight.check_output_folder(Path(args.out), "theory.json", "theory report", args.replace)
        report = run(args)
    except TrainingFailed as error:
        print(f"identity-crisis theory: run failed: {error}", file=sys.stderr)
        sys.exit(1)
    except (ConfigError, DataConfigError) as error:
        # A data root without the files is a bad value like any other: one line, exit 2.
        print(f"identity-crisis theory: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"1-layer linear FCN (lr {report['fcn']['lr']:.4g}, {report['fcn']['steps']} steps)")
    print(format_table(fcn_table(report["fcn"])))
    print()
    print(f"1-layer CNN, one k x k kernel ({_settings_line(report)})")
    print(format_table(cnn_table(report["cnn"])))
    for note in _notes(report):
        print(f"  {note}")
    print()
    print(threshold_line(report))
    path = write_report(report, Path(args.out))
    print(f"took {report['runtime_s']:.0f} s")
    print(f"report: {path}")
