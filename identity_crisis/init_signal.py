"""How much of an untrained CNN's output depends on its input, per init scheme, gain and depth.

    identity-crisis init-signal                     # default vs xavier_uniform, depths 1-20
    identity-crisis init-signal --inits [default,kaiming_normal] --depths [5,20] --model.channels 64
    identity-crisis init-signal --inits [default] --gains [1,1.414,2,2.449] --depths [14,20]
    identity-crisis init-signal --help

At initialization a deep ReLU CNN's output is the sum of a part that varies with the input (the
signal the identity must be built from) and a part that does not (bias and zero-padding
effects, the raw material of the constant). For a batch of MNIST test digits the command
prints, per (init, depth), the per-pixel standard deviation of the output across inputs
(input-dependent), the spatial standard deviation of the mean output (input-independent), and
their ratio. A ratio far below 1 means the net starts out as (nearly) a constant function of
its input, and training only has to shape that constant into the training image.

A second table gives, per hidden layer, the share of its variance that depends on the input,
with the first layer that is dead or blind to it: the measurement every trained run records
(`metrics.json` "layers"), here at initialization, so the two can be read side by side.
`--gains` multiplies the init's weights (model.init_gain; biases untouched).

Exit codes: 0 done; 2 bad arguments or missing data (one line, nothing ran).
"""

from __future__ import annotations

import argparse
import sys

import torch
from jsonargparse.typing import PositiveInt

from datamodules import SingleExampleDataModule
from datamodules.errors import DataConfigError
from identity_crisis import preflight
from identity_crisis.errors import ConfigError, check_positive
from identity_crisis.options import CommandParser
from lightning_modules import CNN
from lightning_modules.base import INITS, Init, PositiveFiniteFloat
from lightning_modules.errors import ModelConfigError


@torch.no_grad()
def input_dependence(model: torch.nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    """The output's input-dependent and input-independent spread on `inputs` (N, C, H, W)."""
    outputs = model(inputs).flatten(1).double()
    across = outputs.std(0).mean().item()
    within = outputs.mean(0).std().item()
    return {"input_dependent": across, "input_independent": within, "ratio": across / within}


def measure(
    inits: list[str],
    depths: list[int],
    inputs: torch.Tensor,
    channels: int = 128,
    kernel_size: int = 5,
    seed: int = 0,
    gains: list[float] = (1.0,),
) -> list[dict]:
    """One row per (init, gain, depth): the output's spread (input_dependence) and, per hidden
    layer, the measurement a test makes of a trained net (`live_share`, `input_share`,
    `first_blind_layer`; lightning_modules.layer_activity), here at initialization."""
    rows = []
    for init in inits:
        for gain in gains:
            for depth in depths:
                torch.manual_seed(seed)
                model = CNN(
                    depth=depth,
                    channels=channels,
                    kernel_size=kernel_size,
                    init=init,
                    init_gain=gain,
                ).eval()
                rows.append(
                    {
                        "init": init,
                        "gain": gain,
                        "depth": depth,
                        **input_dependence(model, inputs),
                        **model.layer_activity_of(inputs),
                    }
                )
    return rows


def command_parser() -> CommandParser:
    parser = CommandParser(
        prog="identity-crisis init-signal",
        description="Input-dependent vs input-independent output of untrained CNNs.",
    )
    # Option names as `fit` spells the same setting; the older spellings still work.
    parser.option(
        "--inits",
        type=list[Init] | Init,
        as_list=True,
        default=["default", "xavier_uniform"],
        help="e.g. [default,orthogonal]",
        valid=f"give inits as a list, e.g. [default,orthogonal], from: {', '.join(INITS)}",
    )
    parser.option(
        "--depths",
        type=list[PositiveInt] | PositiveInt,
        as_list=True,
        default=[1, 5, 10, 15, 20],
        help="e.g. [5,20]",
        valid="give depths >= 1 as a list, e.g. [5,20]",
    )
    parser.option(
        "--gains",
        type=list[PositiveFiniteFloat] | PositiveFiniteFloat,
        as_list=True,
        default=[1.0],
        help="model.init_gain values: the init's weights times each, e.g. [1,1.414,2,2.449]",
        valid="give positive finite numbers as a list, e.g. [1,2.449]",
    )
    parser.option(
        "--model.channels",
        "--channels",
        dest="channels",
        type=int,
        default=128,
        valid="give an integer >= 1",
    )
    parser.option(
        "--model.kernel_size",
        "--kernel-size",
        dest="kernel_size",
        type=int,
        default=5,
        valid="give an odd integer >= 1",
    )
    parser.option(
        "--seed_everything", "--seed", dest="seed", type=int, default=0, valid="give an integer"
    )
    parser.option(
        "--data.test_size",
        "--test-size",
        dest="test_size",
        type=int,
        default=20,
        help="MNIST test digits used",
        valid="give an integer >= 1",
    )
    parser.option(
        "--data.root",
        "--data-root",
        dest="data_root",
        type=str | None,
        default=None,
        help="default: $IDC_DATA_DIR or ./data",
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options, typed and checked before anything runs; ConfigError names a bad one."""
    args = command_parser().parse(argv)
    check_values(args)
    return args


def check_values(args: argparse.Namespace) -> None:
    """What the types cannot say: non-empty lists, an odd kernel, and a net and a test set that
    fit in memory."""
    for option, given in (("--inits", args.inits), ("--depths", args.depths)):
        if not given:
            example = "[default]" if option == "--inits" else "[5,20]"
            raise ConfigError(
                f"{option} is empty; give at least one entry, e.g. {option} {example}"
            )
    check_positive("--data.test_size", args.test_size)
    check_positive("--model.channels", args.channels)
    if args.kernel_size < 1 or args.kernel_size % 2 == 0:
        raise ConfigError(
            f"--model.kernel_size={args.kernel_size} is not valid; it must be odd and >= 1 "
            "(1, 3, 5, ...): zero padding keeps the image size only with an odd kernel"
        )
    preflight.check_seed(args.seed)
    preflight.check_image_memory(
        "the MNIST test set", f"--data.test_size={args.test_size}", args.test_size, (1, 28, 28)
    )
    preflight.check_forward_memory(
        "lightning_modules.cnn.CNN",
        {"depth": max(args.depths), "channels": args.channels, "kernel_size": args.kernel_size},
        args.test_size,
        (1, 28, 28),
        args.channels if max(args.depths) > 1 else 1,  # a 1-layer net has no hidden maps
        f"a depth-{max(args.depths)} CNN of --model.channels={args.channels} "
        f"(--model.kernel_size={args.kernel_size}) on {args.test_size} images",
    )


def main(argv: list[str] | None = None) -> None:
    """`identity-crisis init-signal [options]`: see the module docstring."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else list(argv))
        data = SingleExampleDataModule(
            root=args.data_root, test_sets=["mnist"], test_size=args.test_size
        )
        data.setup("test")
        inputs = data.test_inputs["mnist"]
        rows = measure(
            args.inits,
            args.depths,
            inputs,
            args.channels,
            args.kernel_size,
            args.seed,
            args.gains,
        )
    except (ConfigError, DataConfigError, ModelConfigError) as error:
        # A data root without the files is a bad value like any other: one line, exit 2.
        print(f"identity-crisis init-signal: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(
        f"untrained CNNs, {args.kernel_size}x{args.kernel_size}, {args.channels} channels, "
        f"seed {args.seed}, {len(inputs)} MNIST test digits"
    )
    print("| init | gain | depth | input-dependent std | input-independent std | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['init']} | {r['gain']:.4g} | {r['depth']} | {r['input_dependent']:.2e} | "
            f"{r['input_independent']:.2e} | {r['ratio']:.2e} |"
        )
    print()
    print(
        "input share at init, hidden layer 1, 2, ... (the share of a layer's variance that "
        "depends on the input, as a test measures a trained net's layers)"
    )
    print("| init | gain | depth | input share by hidden layer | first blind layer |")
    print("|---|---|---|---|---|")
    for r in rows:
        shares = " ".join(f"{v:.2g}" for v in r.get("input_share", [])) or "no hidden layer"
        blind = r.get("first_blind_layer") or "-"
        print(f"| {r['init']} | {r['gain']:.4g} | {r['depth']} | {shares} | {blind} |")
