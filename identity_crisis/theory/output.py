"""The theory command's output: the FCN and CNN tables (plain text and markdown), the threshold,
settings and notes lines, and the report files theory.json and theory.md."""

from __future__ import annotations

from pathlib import Path

from identity_crisis.jsonio import write_json, write_text


def _sci_or_dash(value: float | None) -> str:
    """A table cell: the value in scientific notation, or "-" when there is none."""
    return "-" if value is None else f"{value:.2e}"


def fcn_table(fcn: dict) -> list[list[str]]:
    rows = [["weights W", _sci_or_dash(fcn["weight_rel_diff"])]]
    rows += [
        [f"outputs on {name}", _sci_or_dash(v)] for name, v in fcn["prediction_rel_diff"].items()
    ]
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
            _sci_or_dash(r["kernel_rel_error"]) + ("" if r["converged"] else " *"),
            _sci_or_dash(r["iterate_rel_error"]),
        ]
        if per_set:
            for n in names:
                row += [_sci_or_dash(r["predicted_mse"][n]), _sci_or_dash(r["measured_mse"][n])]
        else:
            row += [_sci_or_dash(_mean(r["predicted_mse"])), _sci_or_dash(_mean(r["measured_mse"]))]
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
    write_text(path, "\n\n".join(sections) + "\n")
    return path
