"""Fully connected nets (paper figure 2): `depth` weight matrices, hidden width `width`."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from jsonargparse.typing import PositiveInt
from torch import nn

from lightning_modules.base import Activation, IdentityTaskModule, activation_module


class FCN(IdentityTaskModule):
    """A fully connected net on the flattened image: D -> width -> ... -> width -> D.

    Args:
        depth: number of weight matrices (1 = one D x D matrix).
        width: hidden width (the paper's is 784 = 28 x 28).
        activation: relu or linear; the output layer is always linear.
        bias: whether layers have biases.
        **kwargs: training options of IdentityTaskModule (optimizer, lr, init, ...).
    """

    family = "fcn"
    SHORT_NAMES = {**IdentityTaskModule.SHORT_NAMES, "width": "w"}

    def __init__(
        self,
        depth: PositiveInt = 6,
        width: PositiveInt = 784,
        activation: Activation = "relu",
        bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        size = math.prod(self.image_shape)
        sizes = [size] + [width] * (depth - 1) + [size]
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.activation = activation_module(activation)
        self.init_weights()

    def layer_outputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.activation(h)
                yield h
        yield h.view(x.shape)

    def hidden_maps(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        return None

    def run_name_parts(self) -> list[str]:
        hp = self.hparams
        sizes = [self.short("depth", hp.depth), self.short("width", hp.width)]
        return ["fcn", hp.activation, *sizes] + ([] if hp.bias else ["nobias"])
