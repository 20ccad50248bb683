"""The closed forms of single-layer nets trained on one image by gradient descent: where a
1-layer linear FCN and a 1-layer CNN converge, the patch matrix, its rank and null space, the
predicted deviation from the identity, and the learning rate, momentum and step count of gradient
descent on the quadratic training loss (see identity_crisis.theory for the theory)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from identity_crisis.errors import ConfigError

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
