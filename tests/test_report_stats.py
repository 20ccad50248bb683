"""The report's statistics (identity_crisis/report/stats.py) against known values, and the shares
they give in `identity-crisis report`: per configuration the share of fitted seeds that are the
constant and the identity with n and a Wilson interval, unfitted runs counted beside them, the
50% point of a logistic fit per recipe, its figure and the k/n heatmaps."""

import json
import math

import numpy as np
import pytest
from matplotlib.text import Text

from identity_crisis.report import plots
from identity_crisis.report.loading import RunRecord
from identity_crisis.report.shares import net_verdict
from identity_crisis.report.stats import fisher_exact, fit_logistic, wilson_interval
from identity_crisis.verdict import in_words, results_from_metrics
from tests.test_report import SETS, run_report, write_cell

# --- Wilson and Fisher against published values --------------------------------------------------
# 95% Wilson score intervals as REPRODUCTION.md quotes them and as R's prop.test(correct=FALSE)
# and statsmodels' proportion_confint(method="wilson") give them.
WILSON = [
    ((4, 6), (0.3000, 0.9032)),
    ((0, 3), (0.0, 0.5615)),
    ((5, 6), (0.4365, 0.9699)),
    ((6, 6), (0.6097, 1.0)),
    ((1, 10), (0.0179, 0.4042)),
    ((50, 100), (0.4038, 0.5962)),
]


@pytest.mark.parametrize("counts, expected", WILSON, ids=lambda v: str(v))
def test_wilson_interval_matches_published_values(counts, expected):
    low, high = wilson_interval(*counts)
    assert low == pytest.approx(expected[0], abs=5e-5)
    assert high == pytest.approx(expected[1], abs=5e-5)


def test_wilson_interval_of_no_trials_is_none_and_bad_counts_raise():
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


# Two-sided p-values of R's fisher.test (the last: its tea-tasting example, 0.4857; and the
# criminal twins of its help page, 0.0005367).
FISHER = [
    ([[0, 3], [4, 2]], 0.1667),
    ([[4, 2], [5, 1]], 1.0),
    ([[3, 1], [1, 3]], 0.4857),
    ([[2, 10], [15, 3]], 0.0005367),
    ([[0, 0], [0, 0]], 1.0),
]


@pytest.mark.parametrize("table, expected", FISHER, ids=lambda v: str(v))
def test_fisher_exact_matches_published_values(table, expected):
    assert fisher_exact(table) == pytest.approx(expected, rel=1e-3)
    # The same test whichever group is written first or which outcome is called success.
    swapped_rows = [table[1], table[0]]
    swapped_columns = [row[::-1] for row in table]
    assert fisher_exact(swapped_rows) == pytest.approx(fisher_exact(table))
    assert fisher_exact(swapped_columns) == pytest.approx(fisher_exact(table))


# --- the logistic fit ----------------------------------------------------------------------------
def synthetic_verdicts(x50: float, slope: float, seeds: int, rng_seed: int):
    depths = np.arange(8, 21, 2)
    p = 1 / (1 + np.exp(-slope * (depths - x50)))
    rng = np.random.default_rng(rng_seed)
    return depths, rng.binomial(seeds, p), np.full(len(depths), seeds)


@pytest.mark.parametrize("rng_seed", [1, 2, 3])
def test_logistic_fit_recovers_a_known_50_percent_depth(rng_seed):
    depths, k, n = synthetic_verdicts(x50=15.0, slope=0.8, seeds=60, rng_seed=rng_seed)
    fit = fit_logistic(depths, k, n, "depth")
    assert fit["status"] == "fitted"
    assert fit["x50"] == pytest.approx(15.0, abs=0.6)
    assert fit["low"] < 15.0 < fit["high"]
    assert fit["low"] < fit["x50"] < fit["high"] and fit["high"] - fit["low"] < 2
    assert fit["slope"] == pytest.approx(0.8, rel=0.35)
    assert fit["slope_p"] < 1e-10 and fit["n"] == 7 * 60
    assert "profile" in fit["method"]
    # Per-seed 0/1 verdicts give the same fit as the counts per depth.
    xs = np.repeat(depths, n)
    ys = np.concatenate([[1] * int(ki) + [0] * int(ni - ki) for ki, ni in zip(k, n, strict=True)])
    again = fit_logistic(xs, ys, np.ones_like(ys), "depth")
    assert again["x50"] == pytest.approx(fit["x50"], abs=1e-6)
    assert again["low"] == pytest.approx(fit["low"], abs=1e-6)


def test_logistic_interval_covers_the_true_depth_about_95_percent_of_the_time_at_6_seeds():
    """Six seeds per depth, as the project runs: the interval is the profile likelihood's, so
    its coverage is near 95% even where a few samples separate."""
    covered, statuses = 0, set()
    for rng_seed in range(100):
        depths, k, n = synthetic_verdicts(x50=15.0, slope=0.8, seeds=6, rng_seed=100 + rng_seed)
        fit = fit_logistic(depths, k, n, "depth")
        statuses.add(fit["status"])
        low = -math.inf if fit["low"] is None else fit["low"]
        high = math.inf if fit["high"] is None else fit["high"]
        covered += low <= 15.0 <= high
    assert 88 <= covered <= 100
    assert statuses <= {"fitted", "separated"}


def test_logistic_interval_widens_with_fewer_seeds_and_is_asymmetric():
    # REPRODUCTION.md's depth 16, 18, 20 shares: 0 of 3, 4 of 6, 5 of 6.
    fit = fit_logistic([16, 18, 20], [0, 4, 5], [3, 6, 6], "depth")
    assert fit["status"] == "fitted"
    assert 16 < fit["x50"] < 19
    assert fit["low"] < fit["x50"] < fit["high"]
    assert fit["x50"] - fit["low"] != pytest.approx(fit["high"] - fit["x50"], abs=0.1)
    # A falling share crosses too, with a negative slope.
    falling = fit_logistic([16, 18, 20], [5, 4, 0], [6, 6, 6], "depth")
    assert falling["status"] == "fitted" and falling["slope"] < 0


SEPARATION = [
    # (shares at depths 16, 18, 20, as k of n), status, bounds of the 50% depth
    (([0, 0, 0], [3, 6, 6]), "not estimable", None),
    (([3, 6, 6], [3, 6, 6]), "not estimable", None),
    (([0, 6, 6], [3, 6, 6]), "separated", [16.0, 18.0]),
    (([0, 3, 6], [3, 6, 6]), "separated", [18.0, 18.0]),
    (([6, 0, 0], [6, 6, 6]), "separated", [16.0, 18.0]),
]


@pytest.mark.parametrize("counts, status, between", SEPARATION, ids=lambda v: str(v))
def test_separation_is_a_bound_or_not_estimable_never_a_crash(counts, status, between):
    fit = fit_logistic([16, 18, 20], *counts, "depth")
    assert fit["status"] == status
    assert fit["x50"] is None and fit["slope"] is None
    assert fit["between"] == between
    assert fit["note"]
    json.dumps(fit)  # plain numbers, for report.json
    if status == "separated":
        # The profile interval still holds the bound the data give.
        assert fit["low"] <= between[0] and between[1] <= fit["high"]
        assert fit["low"] > 14 and fit["high"] < 22


def test_one_depth_no_trend_and_a_weak_trend_say_so():
    assert fit_logistic([18], [4], [6], "depth")["status"] == "not estimable"
    assert fit_logistic([16, 18], [4, 4], [6, 0], "depth")["status"] == "not estimable"
    flat = fit_logistic([16, 18], [3, 3], [6, 6], "depth")
    assert flat["status"] == "not estimable" and "no trend" in flat["note"]
    # 1 of 3 against 2 of 3: a crossing, but any depth far away fits nearly as well.
    weak = fit_logistic([16, 18], [1, 2], [3, 3], "depth")
    assert weak["status"] == "fitted" and weak["x50"] == pytest.approx(17.0)
    assert weak["low"] is None and weak["high"] is None
    assert "unbounded" in weak["note"] and weak["slope_p"] > 0.05


# --- a net's verdict: the rule `fit` prints (identity_crisis.verdict.in_words) -------------------
def fractions(identity: float, constant: float) -> dict:
    return {
        "frac_identity": identity,
        "frac_constant": constant,
        "frac_neither": 1 - identity - constant,
    }


VERDICT_METRICS = {
    "constant": fractions(0.0, 1.0),
    "identity": fractions(1.0, 0.0),
    "neither": fractions(0.3, 0.5),
}


def metrics_of(per_set: dict[str, dict]) -> dict:
    return {f"test/{s}/{name}": v for s, scores in per_set.items() for name, v in scores.items()}


@pytest.mark.parametrize(
    "per_set, expected",
    [
        ({s: VERDICT_METRICS["constant"] for s in SETS}, "constant"),
        ({s: VERDICT_METRICS["identity"] for s in SETS}, "identity"),
        ({"mnist": VERDICT_METRICS["constant"], "fashion": fractions(0.0, 0.99)}, "neither"),
        ({"mnist": VERDICT_METRICS["identity"], "noise": fractions(0.8, 0.0)}, "neither"),
        ({"mnist": {"identity_corr": 0.9}}, None),
    ],
)
def test_net_verdict_is_the_rule_fit_prints(per_set, expected):
    record = RunRecord(source="r", config={}, status="ok", fitted=True, metrics=metrics_of(per_set))
    assert net_verdict(record) == expected
    words = in_words(results_from_metrics(record.metrics))
    assert words.startswith("the constant") == (expected == "constant")
    assert words.startswith("the identity for every input") == (expected == "identity")


# --- the report: shares, the 50% depth, the figure, the heatmaps --------------------------------
def set_verdict(run_dir, verdict: str) -> None:
    """Rewrite a fake run's verdict fractions so the whole net is `verdict`."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["metrics"].update(metrics_of({s: VERDICT_METRICS[verdict] for s in SETS}))
    path.write_text(json.dumps(metrics))


# depth -> the constant seeds; depth 16 seed 0 is the identity, every other seed neither.
LADDER_CONSTANTS = {16: (), 18: (0, 1, 4, 5), 20: (0, 1, 4, 5)}
LADDER_UNFITTED = {(16, 5)}
LADDER_FAILED = {(20, 3)}


def write_ladder(sweep) -> None:
    for depth, constants in LADDER_CONSTANTS.items():
        for seed in range(6):
            params = {"model.depth": depth, "model.channels": 4, "seed_everything": seed}
            failed = (depth, seed) in LADDER_FAILED
            cell = write_cell(
                sweep, params, failed=failed, fitted=(depth, seed) not in LADDER_UNFITTED
            )
            if failed:
                continue
            verdict = "identity" if (depth, seed) == (16, 0) else "neither"
            set_verdict(cell / "run", "constant" if seed in constants else verdict)


def test_report_gives_shares_with_n_unfitted_counts_and_the_50_percent_depth(capsys, tmp_path):
    write_ladder(tmp_path / "ladder")
    out = tmp_path / "report"
    code, printed, err = run_report(capsys, tmp_path / "ladder", "--out", out)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    shares = {s["values"]["model.depth"]: s for s in report["shares"]}
    # Fitted n, constants k, the unfitted seed and the failed cell counted beside them.
    counts = {
        d: (s["n"], s["constant"]["k"], s["identity"]["k"], s["not_fitted"], s["no_result"])
        for d, s in shares.items()
    }
    assert counts == {16: (5, 0, 1, 1, 0), 18: (6, 4, 0, 0, 0), 20: (5, 4, 0, 0, 1)}
    assert shares[18]["constant"]["low"] == pytest.approx(0.3000, abs=5e-5)
    assert shares[18]["constant"]["high"] == pytest.approx(0.9032, abs=5e-5)
    assert shares[16]["seeds"]["not fitted"] == [5] and shares[20]["seeds"]["no result"] == [3]

    transitions = report["transitions"]
    assert transitions["key"] == "model.depth"
    (fit,) = transitions["recipes"]
    assert fit["status"] == "fitted" and fit["recipe"] == "all runs"
    assert 16 < fit["x50"] < 20 and fit["low"] < fit["x50"] < fit["high"]
    assert fit["n"] == 16
    assert fit == fit_logistic([16, 18, 20], [0, 4, 4], [5, 6, 5], "depth") | {
        "recipe": "all runs",
        "values": {},
        "points": ["depth 16", "depth 18", "depth 20"],
        "mixed": [],
    }

    summary = (out / "summary.md").read_text()
    assert "| depth | fitted n | the constant (95% Wilson) |" in summary
    assert "| 18 | 6 | 4 of 6 (67%, 30%-90%) | 0 of 6 (0%, 0%-39%) | 2 | 0 | 0 |" in summary
    assert "| 16 | 5 | 0 of 5 (0%, 0%-43%) | 1 of 5 (20%, 4%-62%) | 4 | 1 | 0 |" in summary
    assert "| 20 | 5 | 4 of 5 (80%, 38%-96%) |" in summary
    line = f"all runs: P(constant) = 50% at depth {fit['x50']:.3g}, 95% profile-likelihood"
    assert line in summary and line in printed
    assert "constant_share_depth.png" in report["files"]
    assert (out / "constant_share_depth.svg").is_file()

    # The figure: per depth the k/n and the unfitted seed beside the point, bars that are the
    # Wilson intervals, the logistic curve and its 50% point.
    keys = report["keys"]
    fig = plots.share_figure(report["shares"], keys, "model.depth", transitions)
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert {"0/5 +1 unfitted", "4/6", "4/5"} <= set(texts)
    assert any("95% Wilson" in t for t in texts)
    ax = fig.axes[0]
    assert ax.get_ylabel().startswith("P(constant)")
    curve = max(ax.get_lines(), key=lambda line: len(line.get_xdata()))
    index = int(np.argmin(np.abs(curve.get_xdata() - fit["x50"])))
    assert curve.get_ydata()[index] == pytest.approx(0.5, abs=0.02)


def test_two_swept_keys_give_share_heatmaps_with_k_of_n_never_a_mean(capsys, tmp_path):
    sweep = tmp_path / "grid"
    # (depth, channels) -> constant seeds of 0-2; depth 2 channels 8 seed 2 did not fit.
    constants = {(1, 4): (), (1, 8): (0,), (2, 4): (0, 1), (2, 8): (0, 1)}
    for (depth, channels), which in constants.items():
        for seed in range(3):
            params = {"model.depth": depth, "model.channels": channels, "seed_everything": seed}
            unfitted = (depth, channels, seed) == (2, 8, 2)
            cell = write_cell(sweep, params, channels=channels, fitted=not unfitted)
            set_verdict(cell / "run", "constant" if seed in which else "neither")
    out = tmp_path / "report"
    code, printed, err = run_report(capsys, sweep, "--out", out)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    for verdict in ("constant", "identity"):
        assert f"heatmap_depth_channels_{verdict}.png" in report["files"]
    assert not any("corr" in name for name in report["files"] if name.startswith("heatmap"))
    # One logistic fit per channel count (the recipes) against depth. Two depths always
    # separate: at 4 channels no constant at depth 1, at 8 channels no other net at depth 2.
    recipes = {f["recipe"]: f for f in report["transitions"]["recipes"]}
    assert recipes["channels 4"]["status"] == recipes["channels 8"]["status"] == "separated"
    assert recipes["channels 4"]["between"] == [2, 2] and recipes["channels 8"]["between"] == [1, 1]

    fig = plots.share_heatmap_figure(report["shares"], report["keys"], "constant")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts == {"0/3", "1/3", "2/3", "2/2\n+1 unfitted"}
    image = fig.axes[0].images[0].get_array()
    # depth along x, channels along y: the shares themselves, 1.0 where 2 of 2 fitted are.
    np.testing.assert_allclose(np.asarray(image), [[0, 2 / 3], [1 / 3, 1]])
    summary = (out / "summary.md").read_text()
    assert "| 2 | 8 | 2 | 2 of 2 (100%, 34%-100%) |" in summary
