"""The closed forms checked against trained nets: the project's own 1-layer FCN and CNN trained
by a Lightning Trainer in float64 from the weights the prediction starts from (check_fcn,
check_cnn)."""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from pytorch_lightning import Trainer

from identity_crisis.errors import ConfigError
from identity_crisis.theory.closed_form import (
    _check_kernel_size,
    _image,
    _one_thread,
    _svd,
    delta_kernel,
    deviation_mse,
    error_factors,
    fcn_limit,
    fcn_prediction,
    gd_hyperparameters,
    steps_needed,
)
from identity_crisis.trainer_defaults import TRAINER_DEFAULTS
from lightning_modules import CNN, FCN

# Every odd size up to 11 (the exact regime, cheap to train), then 15 and 21 (the step count
# growing with the condition number) and 29: the first odd k with k^2 = 841 > 784 pixels of a
# 28 x 28 image, where rank < k^2 is structural (on MNIST's 7 also where the identity stops
# being exact, see docs/theory.md).
DEFAULT_KERNELS = (1, 3, 5, 7, 9, 11, 15, 21, 29)
# A trained kernel (or FCN weight matrix) counts as having reached the closed-form limit when
# its relative distance to it is at most this (the acceptance criterion of the checks).
CONVERGED = 1e-3
# The step rule aims 100x below CONVERGED. The test MSE of a non-identity kernel is
# |P(x) (w - delta)|^2 / (H*W); a kernel error e changes it by about 2 <P(x) e, P(x) Pi_N(w0 -
# delta)>, and the directions gradient descent converges on last (small singular values of the
# 7's smooth patches: high-frequency kernels) are the ones noise inputs excite most. On the MNIST
# 7 at k = 31..41 the worst MSE error on mnist, fashion and gaussian_noise was 13-37x the kernel
# error (heavy ball): a kernel within 1e-5 put each of those test MSEs within 4e-4 of the limit's.
DEFAULT_TOL = 1e-5
# Momentum 0 at k >= 15 needs 10^4 to 10^6 steps (see identity_crisis.theory); this budget keeps
# the default report to a few minutes on 2 CPU cores and flags the rows that need more.
DEFAULT_MAX_STEPS = 10_000


@contextlib.contextmanager
def _quiet_single_thread() -> Iterator[None]:
    """One intra-op thread (see _one_thread) and no Lightning chatter, restored afterwards."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with _one_thread(), warnings.catch_warnings():
            for message in (
                ".*does not have many workers.*",
                ".*GPU available but not used.*",
                ".*isinstance\\(treespec, LeafSpec\\).*",
            ):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _trainer(steps: int) -> Trainer:
    # The `fit` command's quiet settings, in float64 on the CPU and without a logger.
    options = {**TRAINER_DEFAULTS, "max_steps": steps, "enable_progress_bar": False}
    return Trainer(**options, accelerator="cpu", precision="64-true", logger=False)


def _prepare(data, test_sets: Sequence[str] | None) -> tuple[torch.Tensor, dict]:
    """The one training image (1, 1, H, W) float64 and the chosen test inputs."""
    data.setup("test")
    if data.image_shape[0] != 1:
        raise ConfigError(
            f"the theory is for single-channel images; {data.hparams.train_dataset} has "
            f"{data.image_shape[0]} channels"
        )
    if len(data.train_images) != 1:
        raise ConfigError(
            f"the theory is for one training image; the data module has {len(data.train_images)}"
        )
    names = list(data.test_set_names if test_sets is None else test_sets)
    for name in names:
        if name not in data.test_inputs:
            raise ConfigError(
                f"test set {name!r} is not in the data module; it has "
                f"{', '.join(data.test_set_names)}"
            )
    return _image(data.train_images[0]), {n: data.test_inputs[n].double() for n in names}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b|."""
    return float((a - b).norm() / b.norm())


def check_fcn(
    data,
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    test_sets: Sequence[str] | None = None,
) -> dict:
    """Train a 1-layer linear FCN (no bias, default init, SGD, momentum 0) on the data module's
    image in float64 and compare it with the closed form from the same initial weights.

    The loss |W x^ - x^|^2 / n has Hessian eigenvalue lambda = 2 |x^|^2 / n on every direction
    that moves (each row of W along x^) and 0 elsewhere, so lr = 1/lambda (the default) reaches
    the limit in one step; `steps` None = that one step. Returns the weights' relative
    difference to the closed form, how far they moved, and per test set the relative difference
    of the trained net's outputs to `fcn_prediction`.
    """
    with _quiet_single_thread():
        x, tests = _prepare(data, test_sets)
        n = x.numel()
        curvature = 2 * float(x.pow(2).sum()) / n
        lr = 1 / curvature if lr is None else lr
        torch.manual_seed(seed)
        model = FCN(
            image_shape=data.image_shape,
            depth=1,
            activation="linear",
            bias=False,
            init="default",
            optimizer="sgd",
            momentum=0.0,
            lr=lr,
        )
        w0 = model.layers[0].weight.detach().double().clone()
        limit = fcn_limit(w0, x)
        if steps is None:
            # Every moving direction contracts by |1 - lr lambda| per step.
            factor = abs(1 - lr * curvature)
            initial = float((w0 - limit).norm() / limit.norm())
            steps = (
                1
                if factor < 1e-12
                else max(1, math.ceil(math.log(DEFAULT_TOL / initial) / math.log(factor)))
            )
        _trainer(steps).fit(model, data)
        trained = model.layers[0].weight.detach().double()
        predictions = {}
        with torch.no_grad():
            for name, inputs in tests.items():
                predictions[name] = _relative(
                    model(inputs).flatten(1), fcn_prediction(w0, x, inputs).flatten(1)
                )
    return {
        "lr": lr,
        "steps": int(model.global_step),
        "final_loss": model.final_train_loss,
        "moved": _relative(trained, w0) if w0.norm() > 0 else float("nan"),
        "weight_rel_diff": _relative(trained, limit),
        "prediction_rel_diff": predictions,
    }


def check_cnn(
    data,
    kernel_sizes: Sequence[int] = DEFAULT_KERNELS,
    seed: int = 0,
    steps: int | None = None,
    *,
    momentum: float | str = 0.0,
    tol: float = DEFAULT_TOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    test_sets: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Train a 1-layer CNN with one k x k kernel (linear, no bias, default init, SGD) on the data
    module's image in float64 for each k, from the kernel the prediction starts from (seeded with
    `seed`), and compare it with delta + Pi_N (w0 - delta).

    lr (and with momentum "auto" the heavy-ball momentum) come from the Hessian's spectrum (see
    gd_hyperparameters). `steps` None = the fewest steps after which the exact gradient-descent
    iterate is within `tol` (relative) of the limit, capped at `max_steps`; an int = exactly that
    many. One dict per k: the rank of the patches, whether the identity is exact, the steps run
    and needed, the trained kernel's relative error to the limit (`kernel_rel_error`, and
    `converged` when <= 1e-3) and to the exact step-t iterate (`iterate_rel_error`), and per test
    set the mean squared deviation from the identity, predicted for the limit, predicted for the
    step-t iterate, and measured on the trained net; `w0` and `trained`, the kernels (k x k).
    `progress`, if given, is called with a line before each training.
    """
    with _quiet_single_thread():
        x, tests = _prepare(data, test_sets)
        return [
            _train_and_compare_cnn(
                data,
                x,
                tests,
                k,
                seed,
                steps,
                momentum=momentum,
                tol=tol,
                max_steps=max_steps,
                progress=progress,
            )
            for k in kernel_sizes
        ]


def _train_and_compare_cnn(
    data,
    x: torch.Tensor,
    tests: dict,
    k: int,
    seed: int,
    steps: int | None,
    *,
    momentum: float | str,
    tol: float,
    max_steps: int,
    progress: Callable[[str], None] | None,
) -> dict:
    """check_cnn for one kernel size k: the result record of that k (see check_cnn)."""
    _check_kernel_size(k)
    s, vh, rank = _svd(x, k)
    nonzero = 2 * s[:rank] ** 2 / x.numel()
    lr, beta = gd_hyperparameters(nonzero, momentum)
    model = _seeded_cnn(data, k, seed, lr, beta)
    w0 = model.layers[0].weight.detach().double().clone().view(k, k)
    delta, limit, coefficients = _cnn_closed_form(w0, vh, rank)
    # Momentum 0 is bisected up to 10^9 steps, heavy ball stepped through up to 10^6.
    needed_limit = 10**9 if beta == 0 else 10**6
    needed = steps_needed(nonzero, coefficients, tol * float(limit.norm()), lr, beta, needed_limit)
    run = _steps_to_run(steps, needed, max_steps)
    if progress is not None:
        progress(f"k = {k}: rank {rank} of {k * k}, training {run} steps (needed {needed})")
    _trainer(run).fit(model, data)
    trained = model.layers[0].weight.detach().double().flatten()
    iterate = limit + vh[:rank].T @ (error_factors(nonzero, lr, beta, run) * coefficients)
    comparison = _compare_cnn_with_closed_form(model, tests, trained, delta, limit, iterate)
    return _cnn_record(
        k,
        s,
        rank,
        lr=lr,
        momentum=beta,
        model=model,
        needed=needed,
        needed_limit=needed_limit,
        comparison=comparison,
        w0=w0,
        trained=trained,
    )


def _seeded_cnn(data, k: int, seed: int, lr: float, momentum: float) -> CNN:
    """The 1-layer linear CNN the check trains (one k x k kernel, no bias, PyTorch's default
    init, SGD), its initial kernel drawn after seeding torch with `seed`."""
    torch.manual_seed(seed)
    return CNN(
        image_shape=data.image_shape,
        depth=1,
        channels=1,
        kernel_size=k,
        activation="linear",
        bias=False,
        init="default",
        optimizer="sgd",
        momentum=momentum,
        lr=lr,
    )


def _cnn_closed_form(
    w0: torch.Tensor, vh: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(delta, w*, coefficients), flattened, from V^T and the rank of P(x^) (see _svd): the
    centre-one kernel, the limit delta + Pi_N (w0 - delta) (cnn_limit, from the SVD already at
    hand), and the initial error w0 - w* = Pi_R (w0 - delta) in the eigenbasis of the row space."""
    k = w0.shape[-1]
    delta = delta_kernel(k).flatten()
    null_basis = vh[rank:]
    limit = delta + null_basis.T @ (null_basis @ (w0.flatten() - delta))
    coefficients = vh[:rank] @ (w0.flatten() - delta)
    return delta, limit, coefficients


def _steps_to_run(steps: int | None, needed: int | None, max_steps: int) -> int:
    """`steps` if given, else the steps needed capped at `max_steps` (all of them when the
    needed count is unknown), at least 1."""
    if steps is not None:
        return steps
    return max(1, min(max_steps if needed is None else needed, max_steps))


def _compare_cnn_with_closed_form(
    model: CNN,
    tests: dict,
    trained: torch.Tensor,
    delta: torch.Tensor,
    limit: torch.Tensor,
    iterate: torch.Tensor,
) -> dict:
    """The trained kernel's relative errors to the limit and to the step-t iterate, and per test
    set the mean squared deviation from the identity: predicted for the limit, predicted for the
    iterate, and measured on the trained net (all kernels flattened)."""
    predicted, predicted_at_steps, measured = {}, {}, {}
    with torch.no_grad():
        for name, inputs in tests.items():
            # = cnn_predicted_error(w0, x, inputs), without redoing the SVD per set.
            predicted[name] = float(deviation_mse(limit - delta, inputs).mean())
            predicted_at_steps[name] = float(deviation_mse(iterate - delta, inputs).mean())
            measured[name] = float((model(inputs) - inputs).pow(2).mean())
    kernel_error = _relative(trained, limit)
    return {
        "kernel_rel_error": kernel_error,
        "converged": kernel_error <= CONVERGED,
        "iterate_rel_error": _relative(trained, iterate),
        "predicted_mse": predicted,
        "predicted_mse_at_steps": predicted_at_steps,
        "measured_mse": measured,
    }


def _cnn_record(
    k: int,
    s: torch.Tensor,
    rank: int,
    *,
    lr: float,
    momentum: float,
    model: CNN,
    needed: int | None,
    needed_limit: int,
    comparison: dict,
    w0: torch.Tensor,
    trained: torch.Tensor,
) -> dict:
    """check_cnn's result for one k (the keys and their order are those of theory.json): the
    patches' spectrum `s` and rank, the optimizer, the steps, `comparison` and the kernels."""
    return {
        "k": k,
        "rank": rank,
        "k2": k * k,
        "exact_identity": rank == k * k,
        "null_dim": k * k - rank,
        "sigma_max": float(s[0]),
        "sigma_min_nonzero": float(s[rank - 1]),
        "lr": lr,
        "momentum": momentum,
        "steps": int(model.global_step),
        "steps_needed": needed,
        "steps_needed_limit": needed_limit,
        "final_loss": model.final_train_loss,
        **comparison,
        "w0": w0.tolist(),
        "trained": trained.view(k, k).tolist(),
    }
