"""What a trained net learned, in one sentence, from its verdict shares.

The shares are the verdict rules' (lightning_modules.metrics): an output is "identity" when it
correlates with its input above the threshold and more than with the training image, "constant"
in the opposite case, else "neither". The sentence leads with MNIST digits (the paper's test
family) and then gives the shares over every test set, so a reader need not interpret
correlations.
"""

from __future__ import annotations

from lightning_modules.metrics import FRACTIONS, split_score_key

# One colour per verdict in every picture (probe panels, report figures): green the identity
# (the net generalized), red the constant (it memorized the training image), grey neither.
VERDICT_COLOURS = {"identity": "#1a7f37", "constant": "#c41e3a", "neither": "#555555"}


def clock(seconds: float) -> str:
    """A duration as m:ss, or h:mm:ss from an hour."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def percent(share: float) -> str:
    """A share as a percentage that never rounds a non-zero share to 0% or a partial one to
    100%."""
    if 0 < share < 0.005:
        return "<1%"
    if 0.995 <= share < 1:
        return ">99%"
    return f"{share:.0%}"


def results_from_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """{test set: {score: value}} from a run's metrics.json "metrics" ("test/<set>/<score>")."""
    results: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if (split := split_score_key(key)) is not None:
            test_set, score = split
            results.setdefault(test_set, {})[score] = value
    return results


# What a whole net is (one of VERDICTS): the constant when every image of every test set got the
# constant verdict, the identity when every image got the identity verdict, else neither. The one
# rule, for the sentence a run prints and for the shares `report` counts.


def _verdict_sets(results: dict[str, dict[str, float]]) -> list[dict[str, float]]:
    return [s for s in results.values() if all(f in s for f in FRACTIONS)]


def _mean_shares(sets: list[dict[str, float]]) -> dict[str, float]:
    return {f: sum(s[f] for s in sets) / len(sets) for f in FRACTIONS}


def net_verdict(results: dict[str, dict[str, float]]) -> str | None:
    """One of VERDICTS for a net's test results; None without verdict shares."""
    sets = _verdict_sets(results)
    if not sets:
        return None
    mean = _mean_shares(sets)
    if mean["frac_constant"] == 1:
        return "constant"
    if mean["frac_identity"] == 1:
        return "identity"
    return "neither"


def in_words(results: dict[str, dict[str, float]], fitted: bool | None = True) -> str:
    """'the identity on 93% of MNIST digits, the constant on 0%; over all 7 test sets: identity
    71%, constant 0%, neither 29%', or 'the constant: the training image for every input'."""
    sets = _verdict_sets(results)
    if not sets:
        return "no test scores"
    mean = _mean_shares(sets)
    caveat = "" if fitted or fitted is None else "NOT fitted, so the verdicts say little; "
    verdict = net_verdict(results)
    if verdict == "constant":
        return f"{caveat}the constant: the training image for every input of all {len(sets)} sets"
    if verdict == "identity":
        return f"{caveat}the identity for every input of all {len(sets)} test sets"
    head = ""
    mnist = results.get("mnist")
    if mnist and all(f in mnist for f in FRACTIONS):
        head = (
            f"the identity on {percent(mnist['frac_identity'])} of MNIST digits, the constant on "
            f"{percent(mnist['frac_constant'])}; "
        )
    shares = ", ".join(
        f"{name} {percent(mean[f'frac_{name}'])}" for name in ("identity", "constant", "neither")
    )
    return f"{caveat}{head}over all {len(sets)} test sets: {shares}"
