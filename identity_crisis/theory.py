"""The closed-form theory of single-layer nets trained on one image, checked against trained nets.

    identity-crisis theory                                # FCN, and CNN k = 1,3,5,7,9,11,15,21,29
    identity-crisis theory --kernels 1,3,5 --test-size 50 --out runs/theory-small
    identity-crisis theory --momentum 0                   # plain gradient descent
    identity-crisis theory --help

Theory (docs: paper.md, "Theory (single-layer nets)"), for the training image x^ of H*W pixels:

* a 1-layer linear FCN f(x) = W x trained by gradient descent from W0 converges to
  W* = W0 + (x^ - W0 x^) x^T / |x^|^2, i.e. f(x) = (<x^, x> / |x^|^2) x^ + W0 (I - x^ x^T/|x^|^2) x;
* a 1-layer CNN with one k x k kernel w (zero padding k//2) outputs P(x) w, P(x) the (H*W, k^2)
  matrix of the image's zero-padded k x k patches. Gradient descent from w0 converges to
  w* = delta + Pi_N (w0 - delta) (delta the centre-one kernel, N the null space of P(x^)): the
  exact identity when the patches of x^ span R^{k^2} (rank k^2); otherwise the error on an input
  x is P(x) Pi_N (w0 - delta).

The checks train the project's own modules (FCN / CNN, depth 1, linear, no bias, PyTorch's
default init, SGD) with a Lightning Trainer in float64 from the very weights the prediction
starts from, and compare. Learning rate and step count come from the spectrum of the training
loss (see `gd_hyperparameters` and `steps_needed`). With momentum 0 the error
along a direction of loss curvature lambda shrinks by |1 - lr lambda| per step, so the step count
grows with the condition number of P(x^)^T P(x^) restricted to its row space: about 10^3 steps
at k = 5 but millions at k = 29. Rows that do not reach the limit within `--max-steps` are
flagged, never passed off as converged; they are still compared with the exact step-t iterate of
gradient descent (column `err GD(t)`). `--momentum auto` (the command's default) uses heavy-ball
momentum tuned from the spectrum: its updates also stay in the span of the gradients, so the
limit is the same, and it needs about sqrt(condition number) times fewer steps.

It prints an FCN table, a CNN table and the smallest kernel size at which the identity stops
being exact, writes `theory.json` and `theory.md` into `--out` (default runs/theory), and ends
with `report: <path>`. Exit codes: 0 done; 1 training failed (diverged); 2 bad arguments or
missing data (one line, nothing ran).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning import Trainer

from datamodules import SingleExampleDataModule
from identity_crisis.cli import TRAINER_DEFAULTS
from identity_crisis.errors import ConfigError, TrainingFailed, check_positive
from identity_crisis.jsonio import write_json
from lightning_modules import CNN, FCN

DEFAULT_KERNELS = (1, 3, 5, 7, 9, 11, 15, 21, 29)
# The test sets the report scores (a few kinds of input: digits, clothes, synthetic patterns,
# noise); the checks use whatever sets their data module holds.
THEORY_TEST_SETS = ("mnist", "fashion", "patterns", "gaussian_noise")
DEFAULT_OUT = "runs/theory"
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
# Momentum 0 at k >= 15 needs 10^4 to 10^6 steps (see the module docstring); this budget keeps
# the default report to a few minutes on 2 CPU cores and flags the rows that need more.
DEFAULT_MAX_STEPS = 10_000
# Singular values of P(x^) at most RANK_RTOL * max(H*W, k^2) * eps * sigma_max count as zero
# (torch.linalg.matrix_rank's default; in float64 for a 784 x 841 matrix, 2e-13 * sigma_max,
# about 2e-11 on the MNIST 7). The 7's smallest nonzero singular value is above 0.07 for every
# k from 1 to 41 (sigma_max <= 83), and past k = 29 the null space is structural (k^2 > 784
# columns), so its rank does not depend on where this tolerance sits within ten orders of
# magnitude.
RANK_RTOL = 1.0


# --- shapes ---------------------------------------------------------------------------------
def _image(image: torch.Tensor) -> torch.Tensor:
    """(H, W), (1, H, W) or (1, 1, H, W) -> (1, 1, H, W) float64."""
    x = torch.as_tensor(image).double()
    while x.dim() < 4:
        x = x.unsqueeze(0)
    if x.shape[:2] != (1, 1):
        raise ConfigError(
            f"the theory is for one single-channel image; got shape {tuple(image.shape)}"
        )
    return x


def _inputs(inputs: torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) -> (N, 1, H, W) float64."""
    x = torch.as_tensor(inputs).double()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f"expected (N, 1, H, W) single-channel inputs, got {tuple(x.shape)}")
    return x


def _check_kernel_size(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"kernel size {k!r} is not valid; it must be an odd integer >= 1")
    if k % 2 == 0:
        raise ConfigError(
            f"kernel size {k} is even: zero padding k//2 cannot keep the image size with an even "
            "kernel; use an odd size (1, 3, 5, ...)"
        )


def _kernel_size_of(w: torch.Tensor) -> int:
    k = math.isqrt(w.numel())
    if k * k != w.numel():
        raise ConfigError(f"a kernel must have k*k entries; got shape {tuple(w.shape)}")
    _check_kernel_size(k)
    return k


def delta_kernel(k: int) -> torch.Tensor:
    """The centre-one k x k kernel: conv2d with it (padding k//2) is the identity."""
    _check_kernel_size(k)
    delta = torch.zeros(k, k, dtype=torch.float64)
    delta[k // 2, k // 2] = 1.0
    return delta


# --- 1-layer linear FCN -----------------------------------------------------------------------
def fcn_limit(w0: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """W* = W0 + (x^ - W0 x^) x^T / |x^|^2: where gradient descent from W0 on the one image x^
    converges (every update is a multiple of (W x^ - x^) x^T, so only W's action on x^ moves)."""
    w0 = torch.as_tensor(w0).double()
    x = torch.as_tensor(x_hat).double().flatten()
    return w0 + torch.outer(x - w0 @ x, x) / x.dot(x)


def fcn_prediction(w0: torch.Tensor, x_hat: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The limit net's outputs, (<x^, x> / |x^|^2) x^ + W0 (I - x^ x^T / |x^|^2) x, for each input
    (N, ...) flattened like the FCN flattens it; returned in the inputs' shape."""
    w0 = torch.as_tensor(w0).double()
    x = torch.as_tensor(x_hat).double().flatten()
    inputs = torch.as_tensor(inputs).double()
    flat = inputs.flatten(1)
    along = (flat @ x) / x.dot(x)
    rest = flat - along[:, None] * x
    return (along[:, None] * x + rest @ w0.T).view(inputs.shape)


# --- 1-layer CNN ------------------------------------------------------------------------------
def patch_matrix(image: torch.Tensor, k: int) -> torch.Tensor:
    """P(x): the (H*W, k^2) float64 matrix of the image's zero-padded k x k patches.

    Row p = i*W + j is the patch centred on pixel (i, j); column a*k + b is the patch's offset
    (a, b), both row-major. That is torch's conv2d order (a cross-correlation, the kernel is not
    flipped): `patch_matrix(x, k) @ w.flatten() == F.conv2d(x, w, padding=k // 2).flatten()`.
    """
    _check_kernel_size(k)
    return F.unfold(_image(image), k, padding=k // 2)[0].T


def _rank(s: torch.Tensor, shape: tuple[int, int]) -> int:
    """How many singular values (descending) exceed RANK_RTOL * max(shape) * eps * s[0]."""
    if len(s) == 0 or s[0] == 0:
        return 0
    return int((s > RANK_RTOL * max(shape) * torch.finfo(torch.float64).eps * s[0]).sum())


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread inside, the previous count after. The work here is small (at most a
    784 x 1681 SVD, one 28 x 28 image per step): on a busy 2-core machine, two threads made the
    SVD of a 784 x 841 patch matrix 3-15x slower and a Lightning training step 5-8x slower (about
    20 ms instead of 3 ms) than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _svd(image: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Singular values (descending), the full right factor V^T (k^2, k^2) and the numerical rank
    of P(image) (see RANK_RTOL)."""
    p = patch_matrix(image, k)
    with _one_thread():
        _, s, vh = torch.linalg.svd(p, full_matrices=True)
    return s, vh, _rank(s, p.shape)


def patch_rank(image: torch.Tensor, k: int) -> int:
    """Numerical rank of P(image) in float64 (tolerance: RANK_RTOL); k^2 means the patches span
    R^{k^2} and a 1-layer CNN trained on the image is the exact identity."""
    p = patch_matrix(image, k)
    with _one_thread():
        return _rank(torch.linalg.svdvals(p), p.shape)


def null_space_projector(image: torch.Tensor, k: int) -> torch.Tensor:
    """Pi_N: the (k^2, k^2) orthogonal projector onto the null space of P(image), from its SVD
    (the right singular vectors past the numerical rank)."""
    _, vh, rank = _svd(image, k)
    basis = vh[rank:]
    return basis.T @ basis


def cnn_limit(w0: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """delta + Pi_N (w0 - delta): where gradient descent from the kernel w0 converges on the one
    image; float64, in w0's shape."""
    w0 = torch.as_tensor(w0).double()
    k = _kernel_size_of(w0)
    delta = delta_kernel(k).flatten()
    limit = delta + null_space_projector(image, k) @ (w0.flatten() - delta)
    return limit.view(w0.shape)


def cnn_predicted_error(
    w0: torch.Tensor, train_image: torch.Tensor, inputs: torch.Tensor
) -> torch.Tensor:
    """Per input x, the limit net's mean squared deviation from the identity,
    |P(x) Pi_N (w0 - delta)|^2 / (H*W): (N,) float64. P(x) e is computed as conv2d(x, e), which
    is the same product (see patch_matrix)."""
    w0 = torch.as_tensor(w0).double()
    k = _kernel_size_of(w0)
    return deviation_mse(cnn_limit(w0, train_image) - delta_kernel(k).view(w0.shape), inputs)


def deviation_mse(deviation: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Per input, the mean squared output of the kernel `deviation` (= w - delta, so this is the
    1-layer CNN's mean squared deviation from the identity): (N,) float64."""
    deviation = torch.as_tensor(deviation).double()
    k = _kernel_size_of(deviation)
    out = F.conv2d(_inputs(inputs), deviation.reshape(1, 1, k, k), padding=k // 2)
    return out.pow(2).flatten(1).mean(1)


def identity_threshold(image: torch.Tensor, max_k: int | None = None) -> int | None:
    """The smallest odd k whose patches of the image do not span R^{k^2} (rank < k^2), scanning
    k = 1, 3, 5, ...; it exists: past k^2 > H*W the rank cannot reach k^2. None if every k up to
    max_k spans."""
    x = _image(image)
    limit = max_k if max_k is not None else math.isqrt(x[0, 0].numel()) + 2
    for k in range(1, limit + 1, 2):
        if patch_rank(x, k) < k * k:
            return k
    return None


# --- gradient descent on the quadratic losses -------------------------------------------------
# The training loss of the 1-layer CNN is L(w) = |P w - x^|^2 / n (n = H*W, torch's mean squared
# error), a quadratic with Hessian 2 P^T P / n, whose eigenvalues are lambda_i = 2 s_i^2 / n for
# the singular values s_i of P. Since P w* = x^, the gradient is H (w - w*): each eigen-component
# of the error w - w* evolves on its own. Null-space components (lambda = 0) never move, which is
# why the limit keeps Pi_N w0.
def gd_hyperparameters(eigenvalues: torch.Tensor, momentum: float | str) -> tuple[float, float]:
    """(lr, momentum) from the nonzero Hessian eigenvalues, largest L, smallest mu.

    momentum 0: lr = 2 / (L + mu), the constant step that minimizes the worst contraction factor
    |1 - lr lambda| over [mu, L]: (L - mu) / (L + mu) per step on every direction, half the steps
    of lr = 1/L (which already cannot overshoot). For the FCN all nonzero eigenvalues are equal
    and this is 1/L: one step is exact.
    "auto": heavy ball (Polyak), lr = 4 / (sqrt L + sqrt mu)^2, momentum ((sqrt L - sqrt mu) /
    (sqrt L + sqrt mu))^2, contraction about 1 - 2 sqrt(mu / L) per step. PyTorch's SGD with
    momentum is this method (buffer v <- m v + g, w <- w - lr v).
    """
    big, small = float(eigenvalues.max()), float(eigenvalues.min())
    if momentum == "auto":
        root_big, root_small = math.sqrt(big), math.sqrt(small)
        ratio = (root_big - root_small) / (root_big + root_small)
        return 4 / (root_big + root_small) ** 2, ratio**2
    if momentum != 0:
        raise ConfigError(f"momentum={momentum!r} is not valid; use 0 or 'auto'")
    return 2 / (big + small), 0.0


def error_factors(
    eigenvalues: torch.Tensor, lr: float, momentum: float, steps: int
) -> torch.Tensor:
    """a_i(t): after `steps` steps of SGD (PyTorch's, heavy ball when momentum > 0) from a zero
    momentum buffer, each eigen-component of the error w - w* is a_i(t) times its initial value.
    Exact: the 2 x 2 recurrence (e, v) -> (e - lr (m v + lambda e), m v + lambda e) per
    eigenvalue, raised to the power `steps`."""
    lam = eigenvalues.double()
    if momentum == 0:
        return (1 - lr * lam) ** steps
    m = torch.zeros(len(lam), 2, 2, dtype=torch.float64)
    m[:, 0, 0] = 1 - lr * lam
    m[:, 0, 1] = -lr * momentum
    m[:, 1, 0] = lam
    m[:, 1, 1] = momentum
    return torch.linalg.matrix_power(m, steps)[:, 0, 0]


def steps_needed(
    eigenvalues: torch.Tensor,
    coefficients: torch.Tensor,
    target: float,
    lr: float,
    momentum: float,
    limit: int = 10**9,
) -> int | None:
    """The fewest steps after which |error| = |a(t) * coefficients| <= target (coefficients: the
    initial error in the eigenbasis), or None beyond `limit`. Momentum 0: every |a_i(t)| falls
    monotonically, so a bisection is exact. Heavy ball: stepped through (its error can grow for
    a while before it falls), up to min(limit, 10^6) steps."""

    def error(t: int) -> float:
        return float((error_factors(eigenvalues, lr, momentum, t) * coefficients).norm())

    if error(0) <= target:
        return 0
    if momentum == 0:
        if error(limit) > target:
            return None
        low, high = 0, 1
        while error(high) > target:
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if error(mid) <= target else (mid, high)
        return high
    lam, c = eigenvalues.double().numpy(), coefficients.double().numpy()
    e, v = c.copy(), np.zeros_like(c)
    for t in range(1, min(limit, 10**6) + 1):
        v = momentum * v + lam * e
        e = e - lr * v
        if np.linalg.norm(e) <= target:
            return t
    return None


# --- checks against trained nets --------------------------------------------------------------
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
    results = []
    with _quiet_single_thread():
        x, tests = _prepare(data, test_sets)
        for k in kernel_sizes:
            _check_kernel_size(k)
            s, vh, rank = _svd(x, k)
            nonzero = 2 * s[:rank] ** 2 / x.numel()
            lr, beta = gd_hyperparameters(nonzero, momentum)
            torch.manual_seed(seed)
            model = CNN(
                image_shape=data.image_shape,
                depth=1,
                channels=1,
                kernel_size=k,
                activation="linear",
                bias=False,
                init="default",
                optimizer="sgd",
                momentum=beta,
                lr=lr,
            )
            w0 = model.layers[0].weight.detach().double().clone().view(k, k)
            delta = delta_kernel(k).flatten()
            # cnn_limit, from the SVD already at hand: delta + Pi_N (w0 - delta).
            null_basis = vh[rank:]
            limit = delta + null_basis.T @ (null_basis @ (w0.flatten() - delta))
            # The initial error w0 - w* = Pi_R (w0 - delta), in the eigenbasis of the row space.
            coefficients = vh[:rank] @ (w0.flatten() - delta)
            # Momentum 0 is bisected up to 10^9 steps, heavy ball stepped through up to 10^6.
            needed_limit = 10**9 if beta == 0 else 10**6
            needed = steps_needed(
                nonzero, coefficients, tol * float(limit.norm()), lr, beta, needed_limit
            )
            if steps is not None:
                run = steps
            else:
                run = max(1, min(max_steps if needed is None else needed, max_steps))
            if progress is not None:
                progress(f"k = {k}: rank {rank} of {k * k}, training {run} steps (needed {needed})")
            _trainer(run).fit(model, data)
            trained = model.layers[0].weight.detach().double().flatten()
            iterate = limit + vh[:rank].T @ (error_factors(nonzero, lr, beta, run) * coefficients)

            predicted, predicted_at_steps, measured = {}, {}, {}
            with torch.no_grad():
                for name, inputs in tests.items():
                    # = cnn_predicted_error(w0, x, inputs), without redoing the SVD per set.
                    predicted[name] = float(deviation_mse(limit - delta, inputs).mean())
                    predicted_at_steps[name] = float(deviation_mse(iterate - delta, inputs).mean())
                    measured[name] = float((model(inputs) - inputs).pow(2).mean())
            kernel_error = _relative(trained, limit)
            results.append(
                {
                    "k": k,
                    "rank": rank,
                    "k2": k * k,
                    "exact_identity": rank == k * k,
                    "null_dim": k * k - rank,
                    "sigma_max": float(s[0]),
                    "sigma_min_nonzero": float(s[rank - 1]),
                    "lr": lr,
                    "momentum": beta,
                    "steps": int(model.global_step),
                    "steps_needed": needed,
                    "steps_needed_limit": needed_limit,
                    "final_loss": model.final_train_loss,
                    "kernel_rel_error": kernel_error,
                    "converged": kernel_error <= CONVERGED,
                    "iterate_rel_error": _relative(trained, iterate),
                    "predicted_mse": predicted,
                    "predicted_mse_at_steps": predicted_at_steps,
                    "measured_mse": measured,
                    "w0": w0.tolist(),
                    "trained": trained.view(k, k).tolist(),
                }
            )
    return results


# --- the command ------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (main), like the rest of the command
        raise ConfigError(message)


def parse_kernels(text: str) -> list[int]:
    """'1,3,5' -> [1, 3, 5]; ConfigError naming the bad entry otherwise."""
    kernels = []
    for item in text.split(","):
        item = item.strip()
        try:
            k = int(item)
        except ValueError:
            raise ConfigError(
                f"--kernels={text}: {item!r} is not a kernel size; give odd integers, e.g. 1,3,5"
            ) from None
        try:
            _check_kernel_size(k)
        except ConfigError as error:
            raise ConfigError(f"--kernels={text}: {error}") from None
        kernels.append(k)
    return list(dict.fromkeys(kernels))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="identity-crisis theory",
        description="Check the closed-form theory of 1-layer FCNs and CNNs against trained nets.",
    )
    parser.add_argument(
        "--kernels",
        default=",".join(map(str, DEFAULT_KERNELS)),
        help="odd CNN kernel sizes, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--data.root", dest="data_root", default=None, help="data root (default $IDC_DATA_DIR)"
    )
    parser.add_argument("--test-size", type=int, default=100, help="images per test set")
    parser.add_argument("--out", default=DEFAULT_OUT, help="report folder (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    parser.add_argument(
        "--momentum",
        default="auto",
        help="auto (heavy ball tuned from the spectrum, default: every k reaches its limit) or 0 "
        "(plain gradient descent: large kernels stop short of the limit within --max-steps)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULT_MAX_STEPS,
        help="most SGD steps per CNN (default %(default)s)",
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=DEFAULT_TOL,
        help="relative kernel error the step rule aims at (default %(default)g)",
    )
    args = parser.parse_args(argv)
    args.kernels = parse_kernels(args.kernels)
    check_positive("--test-size", args.test_size)
    check_positive("--max-steps", args.max_steps)
    if not 0 < args.tol < 1:
        raise ConfigError(f"--tol={args.tol!r} is not valid; it must be in (0, 1)")
    if args.momentum not in ("0", "auto"):
        raise ConfigError(f"--momentum={args.momentum!r} is not valid; choose one of 0, auto")
    args.momentum = 0.0 if args.momentum == "0" else "auto"
    return args


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def fcn_table(fcn: dict) -> list[list[str]]:
    rows = [["weights W", _e(fcn["weight_rel_diff"])]]
    rows += [[f"outputs on {name}", _e(v)] for name, v in fcn["prediction_rel_diff"].items()]
    return [["compared with the closed form", "rel. diff"], *rows]


def cnn_table(cnn: list[dict], per_set: bool = False) -> list[list[str]]:
    """One row per kernel size. The test MSE columns are the mean over the test sets, or with
    `per_set` one predicted / measured pair per set."""
    names = list(cnn[0]["measured_mse"]) if cnn else []
    header = ["k", "rank", "k^2", "identity", "steps", "needed", "err limit", "err GD(t)"]
    if per_set:
        header += [f"{n} {what}" for n in names for what in ("pred", "meas")]
    else:
        header += ["test MSE pred", "test MSE meas"]
    rows = [header]
    for r in cnn:
        needed = r["steps_needed"]
        row = [
            str(r["k"]),
            str(r["rank"]),
            str(r["k2"]),
            "exact" if r["exact_identity"] else "no",
            str(r["steps"]),
            f">{r['steps_needed_limit']:.0e}" if needed is None else str(needed),
            _e(r["kernel_rel_error"]) + ("" if r["converged"] else " *"),
            _e(r["iterate_rel_error"]),
        ]
        if per_set:
            for n in names:
                row += [_e(r["predicted_mse"][n]), _e(r["measured_mse"][n])]
        else:
            row += [_e(_mean(r["predicted_mse"])), _e(_mean(r["measured_mse"]))]
        rows.append(row)
    return rows


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def threshold_line(report: dict) -> str:
    first, checked = report["identity_threshold"], report["first_inexact_checked"]
    line = (
        f"the identity stops being exact at k = {first} (smallest odd k with rank < k^2; "
        f"the image has {report['pixels']} pixels)"
    )
    if checked is None:
        line += "; every checked kernel size is below it"
    elif checked != first:
        line += f"; among the checked kernels: k = {checked}"
    return line


def _settings_line(report: dict) -> str:
    s = report["settings"]
    cap = f"max {s['max_steps']} steps" if s["steps"] is None else f"{s['steps']} steps"
    return (
        f"SGD momentum {s['momentum']}, lr from the spectrum, {cap}, step rule aims at "
        f"{s['tol']:g}; float64; seed {s['seed']}; {s['test_size']} images per test set"
    )


def _notes(report: dict) -> list[str]:
    notes = [
        "err limit: |w - w*| / |w*|, trained vs delta + Pi_N(w0 - delta); * = above 1e-3, the "
        "limit not reached in the steps run",
        "err GD(t): trained vs the exact iterate of the same optimizer after the same steps",
        "needed: steps for the exact iterate to come within the step rule's tolerance",
        "test MSE pred / meas: mean squared deviation from the identity, averaged over the test "
        f"sets ({', '.join(report['settings']['test_sets'])}), predicted for the limit / "
        "measured on the trained net",
    ]
    if any(not r["converged"] for r in report["cnn"]):
        notes.append(
            "rows marked * did not reach the limit: gradient descent converges at a rate set by "
            "the smallest nonzero singular value of the patches; their measured MSE is that of "
            "the step-t iterate (predicted_mse_at_steps in theory.json), not of the limit"
        )
    return notes


def write_report(report: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "theory.json", report)
    sections = [
        "# Theory of single-layer nets vs trained nets",
        f"Training image: {report['train']} ({report['pixels']} pixels). {_settings_line(report)}.",
        "## 1-layer linear FCN",
        f"SGD, lr {report['fcn']['lr']:.4g}, {report['fcn']['steps']} steps; the weights moved "
        f"{report['fcn']['moved']:.3g} (relative) from W0.",
        markdown_table(fcn_table(report["fcn"])),
        "## 1-layer CNN, one k x k kernel",
        markdown_table(cnn_table(report["cnn"])),
        "\n".join(f"- {n}" for n in _notes(report)),
        "Per test set (mean squared deviation from the identity, predicted / measured):",
        markdown_table(cnn_table(report["cnn"], per_set=True)),
        f"**{threshold_line(report)}.**",
        f"Runtime: {report['runtime_s']:.0f} s.",
    ]
    path = out / "theory.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path


def run(args: argparse.Namespace) -> dict:
    start = time.monotonic()
    data = SingleExampleDataModule(
        root=args.data_root, download=False, test_size=args.test_size, test_sets=THEORY_TEST_SETS
    )
    fcn = check_fcn(data, seed=args.seed)
    cnn = check_cnn(
        data,
        args.kernels,
        args.seed,
        None,
        momentum=args.momentum,
        tol=args.tol,
        max_steps=args.max_steps,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    x = _image(data.train_images[0])
    first_checked = next((r["k"] for r in cnn if not r["exact_identity"]), None)
    return {
        "train": f"{data.hparams.train_dataset} {data.hparams.train_split} index "
        f"{data.train_indices[0]} (class {data.hparams.train_class})",
        "pixels": x.numel(),
        "settings": {
            "kernels": args.kernels,
            "seed": args.seed,
            "momentum": args.momentum,
            "steps": None,
            "max_steps": args.max_steps,
            "tol": args.tol,
            "test_size": args.test_size,
            "test_sets": list(THEORY_TEST_SETS),
        },
        "fcn": fcn,
        "cnn": cnn,
        "identity_threshold": identity_threshold(x),
        "first_inexact_checked": first_checked,
        "runtime_s": time.monotonic() - start,
    }


def main(argv: list[str] | None = None) -> None:
    """`identity-crisis theory [options]`: see the module docstring."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else list(argv))
        report = run(args)
    except TrainingFailed as error:
        print(f"identity-crisis theory: run failed: {error}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as error:
        print(f"identity-crisis theory: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"1-layer linear FCN (lr {report['fcn']['lr']:.4g}, {report['fcn']['steps']} steps)")
    print(format_table(fcn_table(report["fcn"])))
    print()
    print(f"1-layer CNN, one k x k kernel ({_settings_line(report)})")
    print(format_table(cnn_table(report["cnn"])))
    for note in _notes(report):
        print(f"  {note}")
    print()
    print(threshold_line(report))
    path = write_report(report, Path(args.out))
    print(f"took {report['runtime_s']:.0f} s")
    print(f"report: {path}")
