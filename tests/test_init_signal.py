"""`identity-crisis init-signal`: how much of an untrained CNN's output depends on its input."""

import pytest
import torch

from identity_crisis.init_signal import input_dependence, main, measure
from lightning_modules import CNN


def test_a_constant_function_has_no_input_dependent_part():
    inputs = torch.rand(6, 1, 28, 28)
    pattern = torch.rand(1, 1, 28, 28)
    scores = input_dependence(lambda x: pattern.expand_as(x) + 0 * x, inputs)
    assert scores["input_dependent"] == 0 and scores["input_independent"] > 0.1


def test_the_identity_is_all_input_dependent():
    scores = input_dependence(torch.nn.Identity(), torch.rand(6, 1, 28, 28))
    assert scores["ratio"] > 1


def test_deep_default_init_starts_as_a_near_constant_and_xavier_does_not(tiny_data):
    data = tiny_data(test_size=8)
    data.setup("test")
    rows = measure(["default", "xavier_uniform"], [2, 16], data.test_inputs["mnist"], channels=16)
    ratio = {(r["init"], r["depth"]): r["ratio"] for r in rows}
    assert ratio["default", 2] > 0.1 and ratio["xavier_uniform", 2] > 0.1
    assert ratio["default", 16] < 1e-3 * ratio["default", 2]
    assert ratio["xavier_uniform", 16] > 100 * ratio["default", 16]


def test_the_command_prints_one_row_per_cell(capsys, data_root):
    main([f"--data-root={data_root}", "--depths=[1,3]", "--channels=4", "--test-size=4"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 * (1 + 4)  # two tables: header + 2 inits x 2 depths


def test_a_bad_init_is_refused_with_the_valid_ones_named(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--inits=[default,he]"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--inits=[default,he] is not valid" in err and "xavier_uniform" in err


def test_gains_scale_the_signal_at_init_as_the_trained_runs_measure_it(tiny_data):
    data = tiny_data(test_size=8)
    data.setup("test")
    inputs = data.test_inputs["mnist"]
    rows = measure(["default"], [12], inputs, channels=16, gains=[1.0, 6**0.5])
    one, kaiming_scale = rows
    assert (one["gain"], kaiming_scale["gain"]) == (1.0, 6**0.5)
    assert len(one["input_share"]) == len(kaiming_scale["input_share"]) == 11
    # PyTorch's default weights shrink the signal layer by layer while its random biases stay:
    # deep in the net the input's share is far smaller than at Kaiming's scale.
    assert one["input_share"][-1] < 0.1 * kaiming_scale["input_share"][-1]
    # The same numbers a test of the net records (metrics.json "layers").
    torch.manual_seed(0)
    net = CNN(depth=12, channels=16, kernel_size=5, init="default", init_gain=6**0.5).eval()
    assert net.layer_activity_of(inputs)["input_share"] == kaiming_scale["input_share"]


@pytest.mark.parametrize("gains", ["0", "[-1,2]", "abc", "inf", "[1,inf]", "", "1,2"])
def test_a_gain_that_is_not_a_positive_number_is_refused(gains, capsys):
    with pytest.raises(SystemExit) as exit:
        main([f"--gains={gains}"])
    assert exit.value.code == 2
    assert "--gains" in capsys.readouterr().err
