"""Convolutional nets (paper figure 3): stride 1, zero padding that keeps the image size, so the
zero border is the only position cue a deep net has."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from jsonargparse.typing import PositiveInt
from torch import nn

from lightning_modules.base import Activation, IdentityTaskModule, activation_module
from lightning_modules.errors import ModelConfigError


def check_odd_kernel(kernel_size: int) -> None:
    """Parity is no bound a type can state, so it is checked here."""
    if kernel_size % 2 == 0:
        raise ModelConfigError(
            f"--model.kernel_size={kernel_size} is even: zero padding cannot keep the image size "
            f"with an even kernel; use an odd size (1, 3, 5, 7, ...)"
        )


def same_conv(c_in: int, c_out: int, kernel_size: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=bias)


CONV_SHORT_NAMES = {**IdentityTaskModule.SHORT_NAMES, "channels": "c", "kernel_size": "k"}


def conv_name_parts(family: str, module: IdentityTaskModule) -> list[str]:
    hp = module.hparams
    sizes = [module.short(key, hp[key]) for key in ("depth", "channels", "kernel_size")]
    return [family, hp.activation, *sizes] + ([] if hp.bias else ["nobias"])


class CNN(IdentityTaskModule):
    """A plain CNN: in -> channels -> ... -> channels -> in, `depth` conv layers.

    Args:
        depth: number of conv layers (1 = one in -> in conv).
        channels: hidden channels (the paper's main setting is 128).
        kernel_size: odd filter size (the paper's main setting is 5).
        activation: relu or linear; the output layer is always linear.
        bias: whether convs have biases.
        **kwargs: training options of IdentityTaskModule (optimizer, lr, init, ...).
    """

    family = "cnn"
    SHORT_NAMES = CONV_SHORT_NAMES

    def __init__(
        self,
        depth: PositiveInt = 5,
        channels: PositiveInt = 128,
        kernel_size: PositiveInt = 5,
        activation: Activation = "relu",
        bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_odd_kernel(kernel_size)
        c = self.image_shape[0]
        widths = [c] + [channels] * (depth - 1) + [c]
        self.layers = nn.ModuleList(
            same_conv(a, b, kernel_size, bias) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.activation = activation_module(activation)
        self.init_weights()

    def layer_outputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            yield x if i == last else (x := self.activation(x))

    def run_name_parts(self) -> list[str]:
        return conv_name_parts("cnn", self)
