"""CNNs with identity skip connections (the paper's ResNet variant)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from jsonargparse.typing import PositiveInt
from torch import nn

from lightning_modules.base import Activation, IdentityTaskModule, activation_module
from lightning_modules.cnn import CONV_SHORT_NAMES, check_odd_kernel, conv_name_parts, same_conv


class ResidualCNN(IdentityTaskModule):
    """A stem conv (in -> channels), residual blocks, a head conv (channels -> in).

    The `depth - 2` middle convs are grouped into blocks of `block_size`; each block computes
    h <- act(h + f(h)), f being its convs with the activation between them. A last block may be
    shorter. Depth 1 is a single in -> in conv and depth 2 a stem and a head, as in `CNN`.

    Args:
        depth: total number of conv layers.
        channels: hidden channels.
        kernel_size: odd filter size.
        activation: relu or linear.
        bias: whether convs have biases.
        block_size: convs per residual block.
        **kwargs: training options of IdentityTaskModule (optimizer, lr, init, ...).
    """

    family = "resnet"
    SHORT_NAMES = {**CONV_SHORT_NAMES, "block_size": "b"}

    def __init__(
        self,
        depth: PositiveInt = 10,
        channels: PositiveInt = 128,
        kernel_size: PositiveInt = 5,
        activation: Activation = "relu",
        bias: bool = True,
        block_size: PositiveInt = 2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_odd_kernel(kernel_size)
        c = self.image_shape[0]
        if depth == 1:
            self.stem, self.head = same_conv(c, c, kernel_size, bias), None
        else:
            self.stem = same_conv(c, channels, kernel_size, bias)
            self.head = same_conv(channels, c, kernel_size, bias)
        middle = max(depth - 2, 0)
        sizes = [block_size] * (middle // block_size)
        sizes += [middle % block_size] if middle % block_size else []
        self.blocks = nn.ModuleList(
            nn.ModuleList(same_conv(channels, channels, kernel_size, bias) for _ in range(n))
            for n in sizes
        )
        self.activation = activation_module(activation)
        self.init_weights()

    def layer_outputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        x = self.stem(x)
        if self.head is None:
            yield x
            return
        x = self.activation(x)
        yield x
        for block in self.blocks:
            h = x
            for i, conv in enumerate(block):
                h = conv(h)
                if i < len(block) - 1:
                    h = self.activation(h)
                    yield h
            x = self.activation(x + h)
            yield x
        yield self.head(x)

    def run_name_parts(self) -> list[str]:
        return conv_name_parts("resnet", self) + [self.short("block_size", self.hparams.block_size)]
