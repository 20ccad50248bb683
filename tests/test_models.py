"""Trained nets behave as the paper and the theory say, on small configs."""

import copy

import pytest
import torch
from pytorch_lightning import Callback, Trainer

from identity_crisis.cli import check_fit_args
from identity_crisis.trainer_defaults import TRAINER_DEFAULTS
from lightning_modules import CNN, FCN, ResidualCNN
from lightning_modules.errors import ModelConfigError, TrainingFailed


def make_trainer(steps: int, **kwargs) -> Trainer:
    """The `fit` command's trainer settings, without a logger or a progress bar."""
    options = {**TRAINER_DEFAULTS, "max_steps": steps, "enable_progress_bar": False}
    return Trainer(**options, logger=False, **kwargs)


def fit_and_test(model, data, steps: int, **kwargs) -> dict[str, float]:
    trainer = make_trainer(steps, **kwargs)
    model.test_set_names = data.test_set_names  # what the command line's argument link does
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_one_layer_cnn_learns_the_identity(tiny_data):
    data = tiny_data(test_size=32)
    model = CNN(depth=1, kernel_size=5, lr=3e-2)
    scores = fit_and_test(model, data, steps=400)
    assert model.fitted
    for name in ("mnist", "fashion", "patterns", "mnist_pairs", "checkerboard"):
        assert scores[f"test/{name}/identity_corr"] >= 0.95, name
        assert scores[f"test/{name}/frac_identity"] >= 0.9, name


def test_one_layer_linear_fcn_matches_the_closed_form(tiny_data):
    """Gradient descent from W0 on one image x converges to W0 + (x - W0 x) x^T / |x|^2."""
    data = tiny_data(test_size=8)
    model = FCN(depth=1, activation="linear", bias=False, optimizer="sgd", momentum=0.0, lr=1.0)
    w0 = model.layers[0].weight.detach().double().clone()
    make_trainer(300, precision="64-true").fit(model, data)

    x = data.train_images[0].flatten().double()
    closed_form = w0 + torch.outer(x - w0 @ x, x) / x.dot(x)
    trained = model.layers[0].weight.detach()
    assert (trained - closed_form).norm() / closed_form.norm() < 1e-8
    assert (trained - w0).norm() / w0.norm() > 1e-2  # it did move

    data.setup("test")
    probe = data.test_inputs["mnist"].flatten(1).double()
    predicted = (probe @ x / x.dot(x))[:, None] * x + (
        probe - (probe @ x / x.dot(x))[:, None] * x
    ) @ w0.T
    with torch.no_grad():
        output = model(data.test_inputs["mnist"].double()).flatten(1)
    assert torch.allclose(output, predicted, rtol=1e-6, atol=1e-8)


def test_six_layer_relu_fcn_memorizes(tiny_data):
    data = tiny_data(test_size=32)
    model = FCN(depth=6, width=784, activation="relu", lr=1e-4)
    scores = fit_and_test(model, data, steps=300)
    assert model.fitted
    for name in ("mnist", "fashion", "patterns", "gaussian_noise"):
        assert scores[f"test/{name}/constant_corr"] > scores[f"test/{name}/identity_corr"], name
        assert scores[f"test/{name}/frac_constant"] >= 0.8, name


def test_residual_cnn_trains_and_reports_every_test_set(tiny_data):
    data = tiny_data(test_size=8)
    model = ResidualCNN(depth=5, channels=8, kernel_size=3, lr=3e-3)
    scores = fit_and_test(model, data, steps=60)
    assert model.final_train_loss is not None
    for name in data.test_set_names:
        assert -1 <= scores[f"test/{name}/identity_corr"] <= 1
    layers = list(model.layer_outputs(torch.rand(2, 1, 28, 28)))
    assert len(layers) == 5 and layers[-1].shape == (2, 1, 28, 28)


def test_stop_loss_ends_training_early(tiny_data):
    model = CNN(depth=1, lr=3e-2, stop_loss=1e-3, check_every=10)
    trainer = make_trainer(2000)
    trainer.fit(model, tiny_data())
    assert trainer.global_step < 2000
    assert trainer.global_step % 10 == 0
    assert model.final_train_loss < 1e-3


def test_stop_loss_waits_for_the_trainers_min_steps(tiny_data):
    # Every loss is below 1.0: the stop comes at the first check at or after min_steps.
    model = CNN(depth=2, channels=4, stop_loss=1.0, check_every=10)
    trainer = make_trainer(100, min_steps=25)
    trainer.fit(model, tiny_data())
    assert trainer.global_step == 30


class RecordLr(Callback):
    def __init__(self):
        self.lrs = []

    # Per optimizer step: one training_step call runs several.
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


def test_warmup_raises_the_learning_rate_linearly_then_holds_it(tiny_data):
    model = CNN(depth=2, channels=4, lr=1e-3, warmup_steps=4)
    record = RecordLr()
    make_trainer(7, callbacks=[record]).fit(model, tiny_data())
    assert record.lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-3])


def test_without_warmup_the_learning_rate_is_constant(tiny_data):
    record = RecordLr()
    make_trainer(3, callbacks=[record]).fit(CNN(depth=2, channels=4, lr=1e-3), tiny_data())
    assert record.lrs == [1e-3] * 3


def plain_adam_weights(model: CNN, images: torch.Tensor, steps: int, lr: float, amsgrad: bool):
    """A copy of `model` trained by a bare torch loop: Adam on the full-batch MSE."""
    net = copy.deepcopy(model)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, amsgrad=amsgrad)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(images), images).backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_amsgrad_trains_as_torchs_amsgrad_and_not_as_adam(tiny_data):
    data = tiny_data()
    torch.manual_seed(0)
    model = CNN(depth=2, channels=4, optimizer="amsgrad", lr=1e-2)
    data.setup("fit")
    images = data.train_images
    amsgrad = plain_adam_weights(model, images, 30, 1e-2, amsgrad=True)
    adam = plain_adam_weights(model, images, 30, 1e-2, amsgrad=False)
    make_trainer(30).fit(model, data)
    trained = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(trained, amsgrad, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(trained, adam, rtol=1e-4, atol=1e-6)


def test_a_run_that_does_not_fit_is_flagged(tiny_data):
    model = CNN(depth=3, channels=4, lr=1e-5)
    make_trainer(5).fit(model, tiny_data())
    assert model.fitted is False
    assert model.final_train_loss > model.hparams.fit_threshold


def test_a_diverging_run_fails(tiny_data):
    model = FCN(depth=2, activation="linear", optimizer="sgd", lr=1e6, check_every=5)
    with pytest.raises(TrainingFailed, match="diverged"):
        make_trainer(50).fit(model, tiny_data())


def test_an_even_kernel_is_refused_by_the_model_itself():
    # Parity is no bound a type states, so the module checks it, from a notebook too; every other
    # bad value is refused by the command line's typed parser (tests/test_cli.py).
    with pytest.raises(ModelConfigError, match=r"--model\.kernel_size=4 is even"):
        CNN(kernel_size=4)


def test_parameter_counts_match_the_paper():
    # Weights only: L x 784^2 for FCNs; k^2 (2C + (L-2) C^2) for CNNs (paper.md).
    assert FCN(depth=6).parameter_counts()["model/weights"] == 3_687_936
    assert (
        CNN(depth=5, channels=1024, kernel_size=5).parameter_counts()["model/weights"] == 78_694_400
    )


def test_init_schemes_zero_the_biases_and_differ():
    a = CNN(depth=2, channels=4, init="kaiming_normal")
    b = CNN(depth=2, channels=4, init="xavier_uniform")
    assert all(layer.bias.abs().sum() == 0 for layer in a.layers)
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)


def test_default_zero_bias_keeps_pytorchs_weights_and_only_zeroes_the_biases():
    torch.manual_seed(3)
    default = CNN(depth=3, channels=4, init="default")
    torch.manual_seed(3)
    zero_bias = CNN(depth=3, channels=4, init="default_zero_bias")
    for kept, changed in zip(default.layers, zero_bias.layers, strict=True):
        assert torch.equal(kept.weight, changed.weight)
        assert kept.bias.abs().sum() > 0
        assert changed.bias.abs().sum() == 0


def test_gain_one_is_pytorchs_default_net_and_gain_g_scales_every_weight_by_g():
    torch.manual_seed(5)
    plain = [torch.nn.Conv2d(a, b, 5, padding=2) for a, b in ((1, 4), (4, 4), (4, 1))]
    torch.manual_seed(5)
    one = CNN(depth=3, channels=4, init="default", init_gain=1.0)
    torch.manual_seed(5)
    scaled = CNN(depth=3, channels=4, init="default", init_gain=6**0.5)
    for reference, kept, changed in zip(plain, one.layers, scaled.layers, strict=True):
        assert torch.equal(kept.weight, reference.weight)  # bit for bit
        assert torch.equal(kept.bias, reference.bias)
        assert torch.allclose(changed.weight, reference.weight * 6**0.5, rtol=1e-6, atol=0)
        assert torch.equal(changed.bias, reference.bias)  # biases untouched
    # sqrt(6) puts PyTorch's default (std 1/sqrt(3 fan_in)) at Kaiming's scale (sqrt(2/fan_in)).
    fan_in = 4 * 5 * 5
    assert scaled.layers[1].weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    assert "defaultx2.449" in scaled.name_parts() and "default" in one.name_parts()


@pytest.mark.parametrize("gain", [0.0, -1.0, float("inf")])
def test_a_gain_that_is_not_a_positive_finite_number_is_refused_by_the_cli(gain):
    message = check_fit_args(["--config", "configs/cnn.yaml", f"--model.init_gain={gain}"])
    assert message is not None and "--model.init_gain" in message


# Buffers that record a run (its images, final loss, step count), set by training alone.
NOT_WEIGHTS = ("train_images", "final_loss", "trained_steps")


def plain_loop(model, batches: list[torch.Tensor]) -> None:
    """The per-step training a researcher would write: the module's optimizer and warmup, one
    step on each batch."""
    configured = model.configure_optimizers()
    if isinstance(configured, dict):
        optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    else:
        optimizer, scheduler = configured, None
    for images in batches:
        loss = torch.nn.functional.mse_loss(model(images), images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize(
    "family, options",
    [
        (CNN, {"depth": 3, "channels": 4, "optimizer": "amsgrad", "warmup_steps": 10}),
        (FCN, {"depth": 2, "optimizer": "sgd", "lr": 0.1}),
    ],
)
def test_many_steps_per_call_give_the_weights_of_one_step_at_a_time(tiny_data, family, options):
    """Lightning runs several optimizer steps per training_step (its per-call cost would
    otherwise dominate a small net's step), without its per-step hook dispatch when no hook would
    run; the weights after N steps are those of a plain per-step loop, of one step per call and of
    the hooked path, and a callback's step hook runs on every step."""
    data = tiny_data(test_size=4)
    data.setup("fit")
    torch.manual_seed(0)
    start = family(**options, check_every=7)
    weights, calls = {}, {}
    for per_call, hooked in ((None, False), (1, False), (None, True)):
        model = copy.deepcopy(start)
        model.steps_per_call = per_call
        count, steps = CountCalls(), CountOptimizerSteps()
        trainer = make_trainer(23, callbacks=[count, steps] if hooked else [count])
        trainer.fit(model, data)
        assert trainer.global_step == 23
        assert model._bare_steps is not hooked
        assert steps.steps == (23 if hooked else 0)
        weights[per_call, hooked], calls[per_call, hooked] = model.state_dict(), count.calls
    plain = copy.deepcopy(start)
    plain_loop(plain, [data.train_images] * 23)
    for name, value in plain.state_dict().items():
        if name in NOT_WEIGHTS:
            continue
        for path in weights:
            torch.testing.assert_close(weights[path][name], value, rtol=1e-6, atol=1e-7)
    # Calls end at each check (steps 7, 14, 21) and at max_steps: 4 calls, not 23.
    assert calls == {(None, False): 4, (1, False): 23, (None, True): 4}


class RecordBatches(Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch["images"].clone())


def test_minibatches_take_one_step_each_and_the_final_loss_is_over_every_image(tiny_data):
    data = tiny_data(num_train=8, train_batch_size=2, test_size=4)
    torch.manual_seed(0)
    start = CNN(depth=2, channels=4, optimizer="amsgrad", lr=1e-2, check_every=7)
    model, record = copy.deepcopy(start), RecordBatches()
    make_trainer(9, callbacks=[record]).fit(model, data)
    assert [len(batch) for batch in record.batches] == [2] * 9
    assert torch.equal(model.train_images, data.train_images)
    with torch.no_grad():
        whole = torch.nn.functional.mse_loss(model(data.train_images), data.train_images)
    assert model.final_train_loss == pytest.approx(whole.item(), rel=1e-5)
    # The weights of a plain loop taking one step on each of the same minibatches.
    plain = copy.deepcopy(start)
    plain_loop(plain, record.batches)
    for name, value in plain.state_dict().items():
        if name not in NOT_WEIGHTS:
            torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-6, atol=1e-7)


def test_the_bare_step_path_names_the_private_lightning_calls_it_needs():
    from pytorch_lightning.core.optimizer import LightningOptimizer

    from lightning_modules.step_path import PROGRESS_CALLS

    optimizer = LightningOptimizer(torch.optim.SGD(CNN(depth=1).parameters(), lr=0.1))
    missing = [name for name in PROGRESS_CALLS if not callable(getattr(optimizer, name, None))]
    assert missing == [], (
        f"Lightning no longer has LightningOptimizer.{', '.join(missing)}: the bare step path "
        "(lightning_modules/step_path.py, bare_step) must change with it"
    )


def test_every_hook_a_user_adds_brings_the_full_step_path_back(tiny_data):
    from lightning_modules.step_path import hooks_in_the_way

    class Clipper(Callback):
        def on_after_backward(self, *_):
            pass

    class Noted(CNN):
        def on_before_backward(self, loss):
            pass

    trainer = make_trainer(1, callbacks=[Clipper()])
    assert hooks_in_the_way(trainer, CNN(depth=1)) == ["Clipper.on_after_backward"]
    assert hooks_in_the_way(make_trainer(1), Noted(depth=1)) == ["Noted.on_before_backward"]
    assert hooks_in_the_way(make_trainer(1, profiler="simple"), CNN(depth=1)) == [
        "profiler SimpleProfiler"
    ]
    assert hooks_in_the_way(make_trainer(1, precision="64-true"), CNN(depth=1)) == [
        "precision DoublePrecision"
    ]


class CountOptimizerSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_before_optimizer_step(self, *_):
        self.steps += 1


class CountCalls(Callback):
    def __init__(self):
        self.calls = 0

    def on_train_batch_end(self, *_):
        self.calls += 1


def test_cpu_steps_skip_the_nvml_load_lightning_puts_in_every_adam_step(monkeypatch):
    """Importing Lightning makes a CUDA build of torch load NVML at every Adam step while CUDA is
    not initialised; a CPU training step runs without that, as a plain PyTorch loop does, and the
    setting is back afterwards."""
    import ctypes
    import os

    from lightning_modules.step_path import NVML_CHECK, cheap_cuda_checks

    if torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: the device count is cached")
    monkeypatch.setenv(NVML_CHECK, "1")  # what importing lightning_fabric sets
    loads = []
    real = ctypes.CDLL
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: loads.append(a) or real(*a, **k))
    net = torch.nn.Linear(3, 3)
    optimizer = torch.optim.Adam(net.parameters())

    def steps():
        for _ in range(3):
            optimizer.zero_grad()
            net(torch.ones(3)).sum().backward()
            optimizer.step()

    with cheap_cuda_checks(torch.device("cpu")):
        steps()
    assert loads == []
    assert os.environ[NVML_CHECK] == "1"
    with cheap_cuda_checks(torch.device("cuda", 0)):
        assert os.environ[NVML_CHECK] == "1"  # a GPU run is left as it is
    if torch.backends.cuda.is_built():  # the cost this avoids exists on CUDA builds only
        steps()
        assert len(loads) >= 3
