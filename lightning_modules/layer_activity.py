"""Which hidden layers still carry the input, measured over every test input in one pass.

For each hidden layer (every layer output but the net's last):

- `live_share`: the share of its units (channel x pixel for a conv layer, neurons for a fully
  connected one) that are positive for at least one test input. 0 = a dead layer: after a ReLU
  it outputs zeros for every input, so nothing after it can depend on the input.
- `input_share`: the share of the layer's output variance that depends on the input. By the law
  of total variance, the variance of all its values splits into the variance across inputs
  (averaged over units) and the variance across units of each unit's mean (the pattern it
  outputs whatever the input). input_share = across inputs / (across inputs + across units);
  0 = the layer outputs the same map for every input (dead, or alive but input-independent).

A net that outputs the constant can get there two ways: with the input carried deep and then
replaced (the paper's figure 4: early layers carry the digit, the 7 grows in the last ones), or
with a layer near the input that is already dead or input-independent. `first_blind_layer`
tells the two apart.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

# Below this share of input-dependent variance a layer is counted as blind to its input: float32
# round-off alone leaves about 1e-7 of relative variance in a layer that ignores its input, and
# a layer that still carries a digit has orders of magnitude more.
BLIND_INPUT_SHARE = 1e-4


class LayerActivity(Metric):
    """Per hidden layer: which units were ever positive, and the running sums of each unit's
    values and squares over the test inputs. A layer's states are made at its first update,
    when its shape is known; every process sees the same net, so they agree under DDP."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = 0

    def update(self, layer: int, h: torch.Tensor) -> None:
        """One batch's output `h` (N, ...) of hidden layer `layer` (0-based, in order): the net's
        forward pass feeds each layer in turn, so no layer's outputs are held for all layers."""
        if layer == self.num_layers:
            zeros = torch.zeros(h.shape[1:], dtype=torch.float64, device=h.device)
            self.add_state(f"positive_{layer}", zeros.clone(), dist_reduce_fx="max")
            self.add_state(f"sum_{layer}", zeros.clone(), dist_reduce_fx="sum")
            self.add_state(f"sumsq_{layer}", zeros.clone(), dist_reduce_fx="sum")
            self.add_state(f"count_{layer}", torch.tensor(0.0, dtype=torch.float64), "sum")
            self.num_layers += 1
        h = h.detach().double()
        positive = getattr(self, f"positive_{layer}")
        setattr(self, f"positive_{layer}", torch.maximum(positive, (h > 0).any(0).double()))
        setattr(self, f"sum_{layer}", getattr(self, f"sum_{layer}") + h.sum(0))
        setattr(self, f"sumsq_{layer}", getattr(self, f"sumsq_{layer}") + h.pow(2).sum(0))
        setattr(self, f"count_{layer}", getattr(self, f"count_{layer}") + len(h))

    def compute(self) -> dict[str, list[float]]:
        live, carried = [], []
        for i in range(self.num_layers):
            count = getattr(self, f"count_{i}").clamp_min(1)
            live.append(float(getattr(self, f"positive_{i}").mean()))
            mean = getattr(self, f"sum_{i}") / count
            across_inputs = (getattr(self, f"sumsq_{i}") / count - mean.pow(2)).clamp_min(0).mean()
            across_units = mean.var(unbiased=False) if mean.numel() > 1 else mean.new_tensor(0.0)
            total = across_inputs + across_units
            carried.append(float(across_inputs / total) if total > 0 else 0.0)
        return {"live_share": live, "input_share": carried}


def first_blind_layer(input_share: list[float], live_share: list[float]) -> int | None:
    """The first hidden layer (1-based) that is dead or blind to its input; None if none is."""
    for i, (carried, live) in enumerate(zip(input_share, live_share, strict=True)):
        if live == 0 or carried < BLIND_INPUT_SHARE:
            return i + 1
    return None
