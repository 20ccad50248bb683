"""How close a net's outputs are to the identity and to the constant (the training image).

Per image: the Pearson correlation of the output with the input (`identity_corr`) and with the
training image (`constant_corr`), the two mean-squared errors, and a verdict:

- identity: identity_corr >= threshold and identity_corr >= constant_corr;
- constant: constant_corr >= threshold and constant_corr > identity_corr;
- neither: everything else (blurred identities, outlines, partial 7s, noise).

A correlation with a (near-)flat image (pixel standard deviation below FLAT_STD) is undefined; it
counts as 0, so a flat output is never a verdict of identity or constant, and it is counted in
`frac_flat`. The MSEs still say how far such an output is from each target.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

VERDICTS = ("identity", "constant", "neither")
# The share of a test set's images with each verdict, as logged: frac_identity, ...
FRACTIONS = tuple(f"frac_{verdict}" for verdict in VERDICTS)


TEST_PREFIX = "test/"


def score_key(test_set: str, score: str) -> str:
    """The logged name of a test set's score: test/<set>/<score>."""
    return f"{TEST_PREFIX}{test_set}/{score}"


def split_score_key(key: str) -> tuple[str, str] | None:
    """(set, score) of a test/<set>/<score> name; None for any other key."""
    parts = key.removeprefix(TEST_PREFIX).split("/") if is_test_key(key) else []
    return (parts[0], parts[1]) if len(parts) == 2 else None


def is_test_key(key) -> bool:
    """Any number the test logs (scores and the per-layer shares): test/..."""
    return isinstance(key, str) and key.startswith(TEST_PREFIX)


DEFAULT_VERDICT_THRESHOLD = 0.9
FLAT_STD = 1e-6


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row correlation of (N, ...) tensors, 0 where either row is flat."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    sa, sb = a.pow(2).mean(1).sqrt(), b.pow(2).mean(1).sqrt()
    defined = (sa > FLAT_STD) & (sb > FLAT_STD)
    corr = (a * b).mean(1) / (sa * sb).clamp_min(FLAT_STD**2)
    return torch.where(defined, corr, torch.zeros_like(corr)).float()


def is_flat(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1).double().std(1, unbiased=False) <= FLAT_STD


def per_image_scores(
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    constants: torch.Tensor,
    threshold: float = DEFAULT_VERDICT_THRESHOLD,
) -> dict[str, torch.Tensor]:
    """Scores of each image; `constants` is the memorized target of each image (N, ...)."""
    identity_corr = pearson(outputs, inputs)
    constant_corr = pearson(outputs, constants)
    verdict = torch.full_like(identity_corr, VERDICTS.index("neither"), dtype=torch.long)
    is_constant = (constant_corr >= threshold) & (constant_corr > identity_corr)
    is_identity = (identity_corr >= threshold) & (identity_corr >= constant_corr)
    verdict[is_constant] = VERDICTS.index("constant")
    verdict[is_identity] = VERDICTS.index("identity")
    return {
        "identity_corr": identity_corr,
        "constant_corr": constant_corr,
        "mse_identity": (outputs - inputs).flatten(1).pow(2).mean(1).float(),
        "mse_constant": (outputs - constants).flatten(1).pow(2).mean(1).float(),
        "verdict": verdict,
        "flat": is_flat(outputs),
    }


class IdentityScores(Metric):
    """Means of the per-image scores over one test set, and the fraction of each verdict.

    `compute()` returns a dict: identity_corr, constant_corr, mse_identity, mse_constant,
    frac_identity, frac_constant, frac_neither, frac_flat.
    """

    full_state_update = False
    MEANS = ("identity_corr", "constant_corr", "mse_identity", "mse_constant")

    def __init__(self, threshold: float = DEFAULT_VERDICT_THRESHOLD, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        for name in self.MEANS:
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("verdicts", torch.zeros(len(VERDICTS), dtype=torch.long), "sum")
        self.add_state("flat", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, inputs: torch.Tensor, outputs: torch.Tensor, constants: torch.Tensor) -> None:
        scores = per_image_scores(inputs, outputs, constants, self.threshold)
        for name in self.MEANS:
            setattr(self, name, getattr(self, name) + scores[name].double().sum())
        self.verdicts += torch.bincount(scores["verdict"], minlength=len(VERDICTS))
        self.flat += scores["flat"].sum()
        self.count += len(inputs)

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp_min(1)
        result = {name: (getattr(self, name) / count).float() for name in self.MEANS}
        for i, fraction in enumerate(FRACTIONS):
            result[fraction] = (self.verdicts[i] / count).float()
        result["frac_flat"] = (self.flat / count).float()
        return result
