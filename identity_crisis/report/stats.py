"""The statistics behind the report's shares, with numpy and math only: Wilson score intervals
for a share (`wilson_interval`), Fisher's exact test for two shares (`fisher_exact`) and a
logistic fit of a share against a numeric key with the key value where it crosses 50% and a
profile-likelihood interval for that value (`fit_logistic`).

Six seeds per point is the usual n here, so every method is one that stays honest at small n:
Wilson rather than the normal approximation (which gives 0-0 at 0 of 3), an exact test rather
than chi-square, and a profile-likelihood interval rather than a Wald one (which is symmetric
about an estimate whose error is not, and meaningless near separation).
"""

from __future__ import annotations

import math

import numpy as np

# The two-sided 95% normal quantile and its square, the chi-square(1) 95% quantile: the profile
# interval holds the crossings whose deviance from the best fit is at most CHI2_95.
Z95 = 1.959963984540054
CHI2_95 = Z95**2
METHOD = "95% profile-likelihood interval"
# Fisher's test counts tables as extreme as the observed one up to this relative tolerance, as
# R and scipy do, so that floating error never drops a table of equal probability.
FISHER_TOLERANCE = 1e-7


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n trials; None when n is 0 (no evidence)."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"{k} successes in {n} trials")
    share = k / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denominator
    # The exact ends at 0 and n, not 1e-17 from rounding.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def fisher_exact(table) -> float:
    """Fisher's exact test of a 2 x 2 table [[a, b], [c, d]] (rows: the two groups; columns:
    successes, failures); the two-sided p-value: the total probability, with the margins fixed,
    of every table no more probable than the observed one."""
    (a, b), (c, d) = ((int(v) for v in row) for row in table)
    if min(a, b, c, d) < 0:
        raise ValueError(f"a 2 x 2 table of counts, not {table}")
    row1, col1, total = a + b, a + c, a + b + c + d
    if total == 0:
        return 1.0
    denominator = math.comb(total, col1)

    def probability(x: int) -> float:
        return math.comb(row1, x) * math.comb(total - row1, col1 - x) / denominator

    observed = probability(a)
    low, high = max(0, col1 - (total - row1)), min(row1, col1)
    p = sum(
        q
        for q in (probability(x) for x in range(low, high + 1))
        if q <= observed * (1 + FISHER_TOLERANCE)
    )
    return min(1.0, p)


# --- logistic fit --------------------------------------------------------------------------------
def log_sigmoid(eta: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -eta)


def log_likelihood(eta: np.ndarray, k: np.ndarray, n: np.ndarray) -> float:
    return float(np.sum(k * log_sigmoid(eta) + (n - k) * log_sigmoid(-eta)))


def binomial_sup(k: np.ndarray, n: np.ndarray) -> float:
    """The log-likelihood of points each fitted at its own share (the saturated model)."""
    total = 0.0
    for ki, ni in zip(k, n, strict=True):
        if 0 < ki < ni:
            total += ki * math.log(ki / ni) + (ni - ki) * math.log(1 - ki / ni)
    return total


def newton_1d(z: np.ndarray, k: np.ndarray, n: np.ndarray) -> float:
    """max over b of the log-likelihood of logit p = b z, when that maximum is finite (the
    caller has ruled out separation): Newton's method with step halving; concave, so it
    converges from 0."""
    b = 0.0
    current = log_likelihood(b * z, k, n)
    for _ in range(200):
        p = np.exp(log_sigmoid(b * z))
        gradient = float(np.sum(z * (k - n * p)))
        curvature = float(np.sum(n * p * (1 - p) * z * z))
        if curvature <= 0:
            break
        step = gradient / curvature
        for _ in range(60):
            value = log_likelihood((b + step) * z, k, n)
            if value >= current - 1e-12:
                break
            step /= 2
        b, improvement = b + step, value - current
        current = max(current, value)
        if abs(step) < 1e-10 or abs(improvement) < 1e-13:
            break
    return current


def profile(c: float, u: np.ndarray, k: np.ndarray, n: np.ndarray) -> float:
    """The profile log-likelihood of a crossing at c: the best fit over slopes b of
    logit p = b (u - c); the supremum at an infinite slope when the points separate about c."""
    z = u - c
    rising = not np.any((k > 0) & (z < 0)) and not np.any((k < n) & (z > 0))
    falling = not np.any((k > 0) & (z > 0)) and not np.any((k < n) & (z < 0))
    if rising or falling:
        # Every point off c is fitted exactly; those at c are held at p = 1/2.
        return float(np.sum(n[z == 0]) * math.log(0.5))
    return newton_1d(z, k, n)


def irls(u: np.ndarray, k: np.ndarray, n: np.ndarray) -> tuple[float, float, float]:
    """(a, b, log-likelihood) of the fit logit p = a + b u, for points that do not separate (a
    finite maximum exists): Newton-Raphson (IRLS) with step halving."""
    share = float(k.sum() / n.sum())
    beta = np.array([math.log(share / (1 - share)), 0.0])
    design = np.column_stack([np.ones_like(u), u])
    current = log_likelihood(design @ beta, k, n)
    for _ in range(200):
        p = np.exp(log_sigmoid(design @ beta))
        gradient = design.T @ (k - n * p)
        information = (design * (n * p * (1 - p))[:, None]).T @ design
        try:
            step = np.linalg.solve(information, gradient)
        except np.linalg.LinAlgError:
            break
        for _ in range(60):
            value = log_likelihood(design @ (beta + step), k, n)
            if value >= current - 1e-12:
                break
            step = step / 2
        beta, improvement = beta + step, value - current
        current = max(current, value)
        if np.max(np.abs(step)) < 1e-10 or abs(improvement) < 1e-13:
            break
    return float(beta[0]), float(beta[1]), current


def interval_end(deviance, start: float, direction: int) -> float | None:
    """The first crossing from `start` outward (direction -1 or +1) where the profile deviance
    exceeds CHI2_95; None when it stays below as far as is searched (unbounded)."""
    inside, step = start, 0.25
    for _ in range(40):
        candidate = start + direction * step
        if deviance(candidate) > CHI2_95:
            outside = candidate
            break
        inside, step = candidate, step * 2
    else:
        return None
    for _ in range(80):
        middle = (inside + outside) / 2
        if deviance(middle) > CHI2_95:
            outside = middle
        else:
            inside = middle
    return (inside + outside) / 2


def fit_logistic(x, k, n, name: str = "x") -> dict:
    """P(success) = 1 / (1 + exp(-slope (x - x50))) fitted to k successes of n at each x.

    Returns a JSON-ready dict: `status` "fitted" (x50 estimated, with `low`/`high`: the 95%
    profile-likelihood interval, None on a side where it is unbounded), "separated" (every
    success lies on one side of every failure: no finite slope, so no estimate; `between` bounds
    the crossing by the data and `low`/`high` is still the profile interval) or "not estimable"
    (all successes, all failures, one x value, no trend); `note` says it in words.
    """
    x, k, n = (np.asarray(v, dtype=float) for v in (x, k, n))
    keep = n > 0
    points = {}
    for xi, ki, ni in zip(x[keep], k[keep], n[keep], strict=True):
        have = points.setdefault(float(xi), [0.0, 0.0])
        have[0] += ki
        have[1] += ni
    xs = np.array(sorted(points))
    k = np.array([points[v][0] for v in xs])
    n = np.array([points[v][1] for v in xs])
    result = {
        "status": "not estimable",
        "x50": None,
        "low": None,
        "high": None,
        "between": None,
        "slope": None,
        "slope_p": None,
        "method": METHOD,
        "n": int(n.sum()),
        "successes": int(k.sum()),
        "note": "",
    }
    if len(xs) < 2:
        result["note"] = f"not estimable: fewer than two {name} values with fitted seeds"
        return result
    if k.sum() == 0 or k.sum() == n.sum():
        level = 0 if k.sum() == 0 else 1
        result["note"] = (
            f"not estimable: the share is {level} at every {name} ({int(k.sum())} of "
            f"{int(n.sum())}), so the data do not place a 50% {name}"
        )
        return result
    # Standardized, so that step sizes and tolerances mean the same at any scale of x.
    centre, scale = float(xs.mean()), float(xs.max() - xs.min()) / 2
    u = (xs - centre) / scale

    def to_x(value):
        return None if value is None else float(centre + scale * value)

    has_failure, has_success = u[k < n], u[k > 0]
    rising = has_failure.max() <= has_success.min()
    falling = has_success.max() <= has_failure.min()
    null = binomial_sup(np.array([k.sum()]), np.array([n.sum()]))
    if rising or falling:
        best = binomial_sup(k, n)
        if rising:
            low_u, high_u = has_failure.max(), has_success.min()
        else:
            low_u, high_u = has_success.max(), has_failure.min()
        # A tie (one x with both outcomes) is held at its share only in the limit: start the
        # interval search just beside it.
        start_low, start_high = (
            (low_u - 1e-9, high_u + 1e-9) if low_u == high_u else ((low_u + high_u) / 2,) * 2
        )
        between = [to_x(low_u), to_x(high_u)]
        result["status"], result["between"] = "separated", between
        if low_u == high_u:
            edge = f"at {name} {between[0]:g}"
        else:
            edge = f"between {name} {between[0]:g} and {between[1]:g}"
        result["note"] = (
            f"separated: the share jumps from {'0 to 1' if rising else '1 to 0'} {edge}, so no "
            f"finite slope fits and the 50% {name} is bounded by the data, not estimated"
        )
    else:
        a, b, best = irls(u, k, n)
        if abs(b) < 1e-9:
            result["note"] = f"not estimable: no trend with {name} (the fitted slope is 0)"
            result["slope"], result["slope_p"] = 0.0, 1.0
            return result
        start_low = start_high = -a / b
        result["status"], result["x50"] = "fitted", to_x(-a / b)
        result["slope"] = b / scale
    lr = max(0.0, 2 * (best - null))
    result["slope_p"] = math.erfc(math.sqrt(lr / 2))
    if lr <= CHI2_95:
        # Far from the data every crossing fits as well as a flat share; with no significant
        # slope that is within the interval on both sides.
        result["note"] = (result["note"] + "; " if result["note"] else "") + (
            f"the interval is unbounded: the trend with {name} is not significant "
            f"(likelihood-ratio p = {result['slope_p']:.2g})"
        )
        return result

    def deviance(c: float) -> float:
        return 2 * (best - profile(c, u, k, n))

    result["low"] = to_x(interval_end(deviance, start_low, -1))
    result["high"] = to_x(interval_end(deviance, start_high, +1))
    if result["status"] == "fitted" and not xs[0] <= result["x50"] <= xs[-1]:
        result["note"] = f"an extrapolation: the 50% point lies outside the {name} values run"
    return result


def logistic_curve(fit: dict, x: np.ndarray) -> np.ndarray | None:
    """P at x of a fitted logistic; None when there is no fitted curve."""
    if fit.get("status") != "fitted":
        return None
    return np.exp(log_sigmoid(fit["slope"] * (np.asarray(x, dtype=float) - fit["x50"])))
