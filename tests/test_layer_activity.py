"""The per-layer live-unit diagnostic: which hidden layers still carry the input."""

from __future__ import annotations

import pytest
import torch

from lightning_modules import CNN
from lightning_modules.layer_activity import LayerActivity, first_blind_layer


def activity_of(model: CNN, inputs: torch.Tensor) -> dict:
    metric = LayerActivity()
    layers = list(model.layer_outputs(inputs))[:-1]
    for start in range(0, len(inputs), 3):  # batches, as test_step feeds them
        for index, h in enumerate(layers):
            metric.update(index, h[start : start + 3])
    result = metric.compute()
    return {**result, "first_blind_layer": first_blind_layer(**result)}


@pytest.fixture
def inputs():
    return torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(0))


def test_the_shares_follow_the_law_of_total_variance(inputs):
    h = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(1)) + torch.linspace(
        -2, 2, 5
    )
    metric = LayerActivity()
    metric.update(0, h[:5])
    metric.update(0, h[5:])
    result = metric.compute()
    flat = h.double().flatten(1)
    across_inputs = flat.var(0, unbiased=False).mean()
    across_units = flat.mean(0).var(unbiased=False)
    assert result["input_share"][0] == pytest.approx(
        float(across_inputs / (across_inputs + across_units))
    )
    assert result["live_share"][0] == pytest.approx(float((flat > 0).any(0).double().mean()))


def test_a_healthy_net_carries_the_input_through_every_layer(inputs):
    torch.manual_seed(0)
    result = activity_of(CNN(depth=3, channels=4, kernel_size=3), inputs)
    assert len(result["live_share"]) == 2
    assert all(share > 0.01 for share in result["input_share"])
    assert result["first_blind_layer"] is None


def test_a_dead_layer_is_named(inputs):
    torch.manual_seed(0)
    model = CNN(depth=4, channels=4, kernel_size=3)
    with torch.no_grad():  # layer 2's ReLUs off for every input
        model.layers[1].weight.zero_()
        model.layers[1].bias.fill_(-1.0)
    result = activity_of(model, inputs)
    assert result["live_share"][1] == 0
    assert result["first_blind_layer"] == 2


def test_a_live_but_input_independent_layer_is_named(inputs):
    torch.manual_seed(0)
    model = CNN(depth=4, channels=4, kernel_size=3)
    with torch.no_grad():  # layer 2 alive, the same map for every input
        model.layers[1].weight.zero_()
        model.layers[1].bias.fill_(1.0)
    result = activity_of(model, inputs)
    assert result["live_share"][1] == 1.0
    assert result["input_share"][1] == pytest.approx(0.0, abs=1e-12)
    assert result["first_blind_layer"] == 2


def test_the_hidden_map_labels_never_round_a_live_share_to_zero():
    from identity_crisis.callbacks import layer_notes

    notes = layer_notes({"live_share": [0.58, 0.004, 0.0], "input_share": [0.5, 2e-4, 0.0]})
    assert notes == ["58% live, 50% input", "0.4% live, 0.02% input", "dead"]
