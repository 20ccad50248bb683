"""The closed-form theory of single-layer nets (identity_crisis.theory) against trained nets.

Training runs in float64 on the MNIST training 7. Plain gradient descent (momentum 0) is used
where it converges in a few hundred steps; past the threshold kernel size (29 for this 7) its
condition number needs millions of steps, so those checks use heavy-ball momentum tuned from the
spectrum, whose updates also stay in the span of the gradients and so share the limit.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from datamodules import SingleExampleDataModule
from identity_crisis import theory

TEST_SETS = ("mnist", "fashion", "gaussian_noise")


def min_norm_limit(w0: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The limit by another route, for patches of full row rank: gradient descent stays in
    w0 + row space of P and ends on P w = x, so w* = w0 + P^T (P P^T)^-1 (x - P w0)."""
    k = w0.shape[-1]
    patches = theory.patch_matrix(image, k)
    w0 = w0.flatten().double()
    residual = image.flatten().double() - patches @ w0
    return (w0 + patches.T @ torch.linalg.solve(patches @ patches.T, residual)).view(k, k)


def train_image(data) -> torch.Tensor:
    data.setup("fit")
    return data.train_images[0].double()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_patch_matrix_times_kernel_is_conv2d(k):
    generator = torch.Generator().manual_seed(k)
    image = torch.rand(1, 1, 9, 7, generator=generator, dtype=torch.float64)  # not square
    kernel = torch.randn(1, 1, k, k, generator=generator, dtype=torch.float64)
    patches = theory.patch_matrix(image, k)
    assert patches.shape == (9 * 7, k * k)
    conv = F.conv2d(image, kernel, padding=k // 2).flatten()
    torch.testing.assert_close(patches @ kernel.flatten(), conv, rtol=1e-12, atol=1e-12)


def test_null_space_projector_of_a_rank_deficient_image():
    """A 4 x 4 image has 16 patches: a 5 x 5 kernel (25 entries) leaves a null space, and the
    limit kernel is the identity on the training image however far w0 is from delta."""
    image = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)).double()
    k = 5
    rank = theory.patch_rank(image, k)
    assert rank == 16
    projector = theory.null_space_projector(image, k)
    torch.testing.assert_close(projector @ projector, projector, atol=1e-12, rtol=0)
    torch.testing.assert_close(projector, projector.T, atol=1e-12, rtol=0)
    assert torch.trace(projector).item() == pytest.approx(k * k - rank)
    patches = theory.patch_matrix(image, k)
    assert (patches @ projector).abs().max() < 1e-12
    w0 = torch.randn(k, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    limit = theory.cnn_limit(w0, image)
    torch.testing.assert_close(limit, min_norm_limit(w0, image), atol=1e-12, rtol=0)
    torch.testing.assert_close(patches @ limit.flatten(), image.flatten(), atol=1e-12, rtol=0)
    assert theory.cnn_predicted_error(w0, image, image).item() < 1e-24
    others = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2)).double()
    assert theory.cnn_predicted_error(w0, image, others).min() > 1e-6


@pytest.mark.parametrize("steps, lr", [(None, None), (100, 1.0)])
def test_one_layer_fcn_reaches_the_closed_form(tiny_data, steps, lr):
    """lr from the spectrum (one step is exact) and a smaller, fixed lr for 100 steps."""
    data = tiny_data(test_size=8, test_sets=TEST_SETS)
    result = theory.check_fcn(data, steps=steps, lr=lr)
    assert result["steps"] == (1 if steps is None else steps)
    assert result["moved"] > 1e-2  # it did train
    assert result["weight_rel_diff"] <= 1e-6
    assert set(result["prediction_rel_diff"]) == set(TEST_SETS)
    for name, diff in result["prediction_rel_diff"].items():
        assert diff <= 1e-6, name


def test_fcn_prediction_is_the_limit_net(tiny_data):
    data = tiny_data(test_size=4, test_sets=("mnist",))
    data.setup("test")
    x = train_image(data)
    w0 = torch.randn(784, 784, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    inputs = data.test_inputs["mnist"].double()
    limit = theory.fcn_limit(w0, x)
    torch.testing.assert_close(
        theory.fcn_prediction(w0, x, inputs).flatten(1), inputs.flatten(1) @ limit.T
    )
    torch.testing.assert_close(limit @ x.flatten(), x.flatten())  # it fits the training image


def test_cnn_is_the_exact_identity_when_the_patches_span(tiny_data):
    """Plain gradient descent (momentum 0) on the 7: its patches span R^{k^2} for small k."""
    data = tiny_data(test_size=8, test_sets=TEST_SETS)
    x = train_image(data)
    results = theory.check_cnn(data, [1, 3], seed=0)
    for r in results:
        k = r["k"]
        assert r["rank"] == k * k == theory.patch_rank(x, k) and r["exact_identity"]
        assert r["momentum"] == 0.0 and r["steps"] == r["steps_needed"]
        delta = theory.delta_kernel(k)
        w0, trained = torch.tensor(r["w0"]), torch.tensor(r["trained"])
        assert (w0 - delta).norm() > 0.1  # it did not start at the identity
        torch.testing.assert_close(theory.cnn_limit(w0, x), delta, atol=1e-12, rtol=0)
        assert ((trained - delta).norm() / delta.norm()).item() <= 1e-3
        assert r["kernel_rel_error"] <= 1e-3 and r["converged"]
        assert r["iterate_rel_error"] <= 1e-9  # the trained kernel is gradient descent's iterate
        for name in TEST_SETS:
            assert r["predicted_mse"][name] < 1e-24, name
            assert r["measured_mse"][name] < 1e-6, name


@pytest.fixture(scope="module")
def past_threshold(data_root):
    """The threshold (the smallest k whose patches do not span) and trained results for k = 3
    (below) and two sizes above it. The sizes above are not the threshold itself: at k = 29 the
    smallest nonzero singular value of the patches is 0.08, which needs ~10^4 heavy-ball steps;
    at 33 and 37 it is 0.26 and 0.37 (~2800 and ~1900 steps)."""
    data = SingleExampleDataModule(
        root=str(data_root), download=False, test_size=8, test_sets=TEST_SETS
    )
    x = train_image(data)
    threshold = theory.identity_threshold(x)
    sizes = [3, threshold + 4, threshold + 8]
    return x, threshold, theory.check_cnn(data, sizes, seed=0, momentum="auto"), data


def test_the_identity_stops_being_exact_at_the_threshold(past_threshold):
    x, threshold, _, _ = past_threshold
    below = threshold - 2
    assert theory.patch_rank(x, below) == below * below
    assert theory.patch_rank(x, threshold) < threshold * threshold
    # On 28 x 28 pixels the rank is at most 784 < 29^2: the 7 spans every kernel size it can.
    assert threshold == 29


def test_cnn_past_the_threshold_reaches_delta_plus_the_null_space_part(past_threshold):
    x, threshold, results, data = past_threshold
    for r in results[1:]:
        k = r["k"]
        assert k > threshold and r["rank"] < k * k and not r["exact_identity"]
        w0, trained = torch.tensor(r["w0"]), torch.tensor(r["trained"])
        limit = min_norm_limit(w0, x)  # = delta + Pi_N (w0 - delta), without an SVD
        deviation = limit - theory.delta_kernel(k)
        assert deviation.norm() > 0.1  # far from the identity
        assert ((trained - limit).norm() / limit.norm()).item() <= 1e-3
        assert r["kernel_rel_error"] <= 1e-3 and r["converged"]
        for name in TEST_SETS:
            predicted = theory.deviation_mse(deviation, data.test_inputs[name]).mean().item()
            assert r["predicted_mse"][name] == pytest.approx(predicted, rel=1e-8), name
            predicted, measured = r["predicted_mse"][name], r["measured_mse"][name]
            assert predicted > 1e-4, name  # a real error, not rounding
            assert abs(measured - predicted) / predicted <= 1e-3, name


def test_predicted_error_orders_the_kernel_sizes_as_training_does(past_threshold):
    _, _, results, _ = past_threshold
    for name in TEST_SETS:
        predicted = [r["predicted_mse"][name] for r in results]
        measured = [r["measured_mse"][name] for r in results]
        order = sorted(range(len(results)), key=predicted.__getitem__)
        assert order == sorted(range(len(results)), key=measured.__getitem__), name
        assert order == [0, 1, 2], name  # the error grows with the kernel size


def test_theory_command_writes_the_numbers_the_functions_return(
    data_root, tmp_path, capsys, monkeypatch
):
    """The report holds what check_fcn and check_cnn returned (caught on their way out)."""
    returned = {}
    for name in ("check_fcn", "check_cnn"):
        original = getattr(theory, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            returned[_name] = _original(*args, **kwargs)
            return returned[_name]

        monkeypatch.setattr(theory, name, spy)
    out = tmp_path / "theory"
    argv = ["--kernels", "[1,3]", "--test-size", "4", "--momentum", "auto", "--out", str(out)]
    theory.main([*argv, "--data.root", str(data_root)])
    printed = capsys.readouterr().out
    assert printed.rstrip().splitlines()[-1] == f"report: {out / 'theory.md'}"
    assert "the identity stops being exact at k = 29" in printed

    report = json.loads((out / "theory.json").read_text())
    assert report["fcn"] == json.loads(json.dumps(returned["check_fcn"]))
    assert report["cnn"] == json.loads(json.dumps(returned["check_cnn"]))
    assert [r["k"] for r in report["cnn"]] == [1, 3]
    assert all(r["exact_identity"] and r["converged"] for r in report["cnn"])
    assert report["identity_threshold"] == 29 and report["first_inexact_checked"] is None

    markdown = (out / "theory.md").read_text()
    fcn_weights = f"| weights W | {returned['check_fcn']['weight_rel_diff']:.2e} |"
    assert fcn_weights in markdown
    for r in returned["check_cnn"]:
        row = f"| {r['k']} | {r['rank']} | {r['k2']} | exact | {r['steps']} | "
        assert row in markdown and f"{r['kernel_rel_error']:.2e}" in markdown
        assert f"{r['measured_mse']['mnist']:.2e}" in markdown


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--kernels", "[3,4]"], "kernel size 4 is even"),
        (["--kernels", "0"], "kernel size 0 is not valid"),
        (["--kernels", "[3,x]"], "--kernels=[3,x] is not valid"),
        (["--kernels", "3,5"], "as a list, e.g. [1,3,5]"),
        (["--kernels", "[]"], "--kernels=[] is not valid"),
        (["--test-size", "0"], "--data.test_size=0"),
        (["--momentum", "0.5"], "--momentum=0.5 is not valid; choose one of 0, auto"),
        (["--tol", "1"], "--tol=1 is not valid; it must be in (0, 1)"),
        (["--bogus"], "--bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        theory.main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and needle in error
    assert not (tmp_path / "theory.json").exists()
