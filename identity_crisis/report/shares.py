"""Counts of nets, not means of scores: per configuration, how many fitted seeds gave the
constant and how many the identity, with Wilson intervals (`share_numbers`); per recipe, where
the share of constants crosses 50% along a numeric swept key (`transitions`); and their texts
for summary.md (`shares_markdown`).

A mean correlation of 0.67 over three seeds may be two constants and a non-constant net, or
three partial 7s; a share with its n says which, and what it is worth.
"""

from __future__ import annotations

from identity_crisis import run_folder, verdict
from identity_crisis.report.grouping import (
    Configuration,
    is_numeric,
    make_label,
    short_key_name,
    sort_value,
    value_text,
)
from identity_crisis.report.loading import RunRecord
from identity_crisis.report.stats import METHOD, fit_logistic, wilson_interval
from identity_crisis.verdict import results_from_metrics
from lightning_modules.metrics import VERDICTS


def net_verdict(record: RunRecord) -> str | None:
    """The constant, the identity or neither (metrics.VERDICTS) for a finished run; None when it
    has no verdict shares (a run from before they were measured, or no scores)."""
    return verdict.net_verdict(results_from_metrics(record.metrics))


def run_class(record: RunRecord) -> str:
    """Where a run counts: a net verdict (fitted runs only, the ones the shares are over), "not
    fitted", or "no result" (failed, crashed, broken, no scores, no verdict shares)."""
    if record.status != run_folder.OK or not record.metrics:
        return "no result"
    if record.fitted is not True:
        return "not fitted"
    return net_verdict(record) or "no result"


def share(k: int, n: int) -> dict:
    interval = wilson_interval(k, n)
    return {
        "k": k,
        "n": n,
        "share": k / n if n else None,
        "low": interval[0] if interval else None,
        "high": interval[1] if interval else None,
    }


def share_numbers(config: Configuration, keys: list[str]) -> dict:
    """One configuration's counts: of its fitted runs (n), how many are the constant and the
    identity (each with a 95% Wilson interval); beside them the runs that did not fit and those
    with no result, counted, never dropped."""
    classes = [run_class(r) for r in config.runs]
    n = sum(c in VERDICTS for c in classes)
    seeds = {
        c: sorted(
            (r.seed for r, rc in zip(config.runs, classes, strict=True) if rc == c), key=sort_value
        )
        for c in (*VERDICTS, "not fitted", "no result")
    }
    return {
        "label": config.label,
        "values": dict(zip(keys, config.values, strict=True)),
        "n": n,
        "constant": share(classes.count("constant"), n),
        "identity": share(classes.count("identity"), n),
        "neither": classes.count("neither"),
        "not_fitted": classes.count("not fitted"),
        "no_result": classes.count("no result"),
        "seeds": seeds,
    }


def transition_key(keys: list[str], shares: list[dict]) -> str | None:
    """The key the share of constants is fitted against: the first swept key whose values are
    all numbers (depth when it is swept, as swept_keys puts it first)."""
    for key in keys:
        values = [s["values"][key] for s in shares]
        if values and all(is_numeric(v) for v in values):
            return key
    return None


def recipes(shares: list[dict], keys: list[str], key: str) -> dict[str, list[dict]]:
    """The configurations by their values of every swept key but `key`: one recipe each."""
    rest = [k for k in keys if k != key]
    groups: dict[str, list[dict]] = {}
    for s in shares:
        label = make_label(rest, tuple(s["values"][k] for k in rest)) if rest else "all runs"
        groups.setdefault(label, []).append(s)
    return groups


def transitions(
    shares: list[dict], keys: list[str], configs: list[Configuration], follow: list[str]
) -> dict | None:
    """Per recipe, the logistic fit of P(constant) against the transition key (see
    stats.fit_logistic); None when no swept key is numeric. A key that varies along a recipe's
    curve without being swept (a budget raised for one depth) is named: the curve mixes it."""
    key = transition_key(keys, shares)
    if key is None:
        return None
    name = key.rsplit(".", 1)[-1]
    by_label = {c.label: c for c in configs}
    fits = []
    for label, members in recipes(shares, keys, key).items():
        members = sorted(members, key=lambda s: s["values"][key])
        fit = fit_logistic(
            [s["values"][key] for s in members],
            [s["constant"]["k"] for s in members],
            [s["n"] for s in members],
            name,
        )
        mixed = []
        for other in follow:
            values = {value_text(other, by_label[s["label"]].value(other)) for s in members}
            if len(values) > 1:
                mixed.append(f"{other} varies along it ({', '.join(sorted(values))})")
        fits.append(
            {
                "recipe": label,
                "values": {k: v for k, v in members[0]["values"].items() if k != key},
                "points": [s["label"] for s in members],
                **fit,
                "mixed": mixed,
            }
        )
    return {"key": key, "share": "constant", "recipes": fits}


# --- texts ---------------------------------------------------------------------------------------
def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def share_text(s: dict) -> str:
    """'4 of 6 (67%, 30%-90%)'; '- (no fitted seed)' when n is 0."""
    if not s["n"]:
        return "- (no fitted seed)"
    return f"{s['k']} of {s['n']} ({percent(s['share'])}, {percent(s['low'])}-{percent(s['high'])})"


def shares_columns(keys: list[str]) -> list[str]:
    columns = [short_key_name(k, keys) for k in keys] or ["configuration"]
    return columns + [
        "fitted n",
        "the constant (95% Wilson)",
        "the identity (95% Wilson)",
        "neither",
        "not fitted",
        "no result",
    ]


def shares_rows(shares: list[dict], keys: list[str]) -> list[list[str]]:
    rows = []
    for s in shares:
        row = [value_text(k, s["values"][k]) for k in keys] or [s["label"]]
        row += [
            str(s["n"]),
            share_text(s["constant"]),
            share_text(s["identity"]),
            str(s["neither"]),
            str(s["not_fitted"]),
            str(s["no_result"]),
        ]
        rows.append(row)
    return rows


def number(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:.3g}"


def transition_line(fit: dict, key: str) -> str:
    """One recipe's 50% point in words, for summary.md and the console."""
    name = key.rsplit(".", 1)[-1]
    head = f"{fit['recipe']}: P(constant) = 50% at {name} "
    if fit["status"] == "fitted":
        head += f"{fit['x50']:.3g}"
    elif fit["status"] == "separated":
        low, high = fit["between"]
        head += f"{low:g}" if low == high else f"between {low:g} and {high:g} (bound)"
    else:
        return f"{fit['recipe']}: {fit['note']} (n = {fit['n']})"
    if fit["low"] is None and fit["high"] is None:
        interval = "95% interval unbounded"
    else:
        interval = f"{fit['method']} {number(fit['low'])} to {number(fit['high'])}"
    mixed = f"; NOTE {'; '.join(fit['mixed'])}" if fit["mixed"] else ""
    note = f"; {fit['note']}" if fit["note"] else ""
    return f"{head}, {interval} (n = {fit['n']} fitted seeds{note}){mixed}"


def shares_markdown(shares: list[dict], keys: list[str], fits: dict | None) -> list[str]:
    """The summary.md section: the shares table, then the 50% point of each recipe."""
    columns = shares_columns(keys)
    lines = [
        "## Shares of fitted seeds: the constant and the identity",
        "",
        "A net is the constant when every test image of every set got the constant verdict, the "
        "identity when every one got the identity verdict (the rule `fit` prints), else neither. "
        "Shares are over fitted runs only, whatever --include-unfitted says; runs that did not "
        "fit and runs with no result are counted beside them.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in shares_rows(shares, keys)),
        "",
    ]
    if fits is not None:
        key = fits["key"]
        lines += [
            f"## Where P(constant) crosses 50% along `{key}`",
            "",
            "A logistic fit per recipe (the runs that share every other swept value) of the share "
            f"of constants against `{key}`, with the {METHOD} of the 50% point. Separated data "
            "(every constant on one side of every other net) bound the point instead.",
            "",
            *(f"- {transition_line(fit, key)}" for fit in fits["recipes"]),
            "",
        ]
    return lines
