"""The summary table (one row per configuration) and `summary.md`: sources, swept keys, the
table, the shares of constant and identity nets with the 50% point (shares.shares_markdown), the
figures, the notes and every problem."""

from __future__ import annotations

import math

from datamodules.single_example import HEADLINE_TEST_SETS
from identity_crisis.report.grouping import short_key_name, value_text
from identity_crisis.report.loading import CORRS
from identity_crisis.report.shares import shares_markdown
from lightning_modules.metrics import FRACTIONS, score_key

# The table's score columns, (test set, column title): one set per kind of input (digits like
# the training image, other natural images, synthetic patterns, noise), so the table stays narrow
# enough to read; every test set's numbers are in report.json and the curves.
SHORT_SET_TITLES = {"gaussian_noise": "noise"}  # a narrow table column
TABLE_SETS = tuple((name, SHORT_SET_TITLES.get(name, name)) for name in HEADLINE_TEST_SETS)


def format_number(value, digits: int = 2) -> str:
    """A score in the table: fixed point, "-" where a configuration has none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def input_lost_text(lost: list[int | None]) -> str:
    """Per run (seed order), the first hidden layer dead or blind to the input: '2, 2, -' ('-'
    carries the input to the output); '?' when no run measured it."""
    if not lost:
        return "?"
    return ", ".join("-" if layer is None else str(layer) for layer in lost)


def table_rows(numbers: list[dict], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """The table's column names and one row of texts per configuration."""
    columns = [short_key_name(k, keys) for k in keys] or ["configuration"]
    columns += ["seeds", "fitted/total", "final loss (max)"]
    columns += [f"{title} id / const" for _, title in TABLE_SETS]
    columns += ["mnist verdicts id / const / neither", "input lost at layer"]
    rows = []
    for n in numbers:
        mean = n["mean"]
        row = [value_text(k, n["values"][k]) for k in keys] or [n["label"]]
        row += [
            ", ".join(map(str, n["seeds"])) or "none",
            f"{n['fitted']}/{n['runs']}",
            "-" if n["final_loss_max"] is None else f"{n['final_loss_max']:.2g}",
        ]
        for name, _ in TABLE_SETS:
            row.append(" / ".join(format_number(mean.get(score_key(name, s))) for s in CORRS))
        row.append(" / ".join(format_number(mean.get(score_key("mnist", f))) for f in FRACTIONS))
        row.append(input_lost_text(n["input_lost_at"]))
        rows.append(row)
    return columns, rows


def summary_markdown(report: dict, columns: list[str], rows: list[list[str]]) -> str:
    keys = ", ".join(f"`{k}`" for k in report["keys"]) or "none (one configuration)"
    used = sum(n["used"] for n in report["configurations"])
    total = sum(n["runs"] for n in report["configurations"])
    which = (
        "finished runs, fitted or not (--include-unfitted)"
        if report["include_unfitted"]
        else "fitted, finished runs only"
    )
    lines = [
        "# identity-crisis report",
        "",
        f"Sources: {', '.join(f'`{s}`' for s in report['sources'])}  ",
        f"Swept keys: {keys}; seeds: {', '.join(map(str, report['seeds'])) or 'none'}  ",
        f"Means over {which}: {used} of {total} runs. Identity / constant columns are mean "
        "correlations of the output with the input / with the training image.",
        *(["", f"**{report['nothing_fitted']}**"] if report["nothing_fitted"] else []),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *shares_markdown(report["shares"], report["keys"], report["transitions"]),
        "## Figures",
        "",
    ]
    lines += [f"- [{name}]({name})" for name in report["files"] if not name.endswith(".svg")]
    lines += [f"- note: {note}" for note in report["notes"]]
    lines += ["", f"## Problems ({len(report['problems'])})", ""]
    if not report["problems"]:
        lines.append("None: every run finished and fitted, every configuration has every seed.")
    for problem in report["problems"]:
        where = problem["configuration"] + (
            f", seed {problem['seed']}" if problem["seed"] is not None else ""
        )
        source = f" `{problem['source']}`:" if problem["source"] else ""
        lines.append(f"- **{problem['kind']}** [{where}]{source} {problem['detail']}")
    return "\n".join(lines) + "\n"
