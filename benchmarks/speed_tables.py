"""The tables `bench_speed.py` prints: medians with their ranges, one markdown table per section
(the layout BENCHMARKS.md quotes)."""

from __future__ import annotations

import statistics

FIG3_STEPS = 1500  # configs/cnn.yaml's min_steps, where a depth-5 cell stops (its loss is < 1e-4)


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict, scale: float = 1.0, digits: int = 3) -> str:
    """`median (min-max)` with `digits` significant digits."""
    m, lo, hi = (f"{s[k] * scale:.{digits}g}" for k in ("median", "min", "max"))
    return f"{m} ({lo}-{hi})"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def overhead_table(results: list[dict]) -> str:
    rows = [
        [
            r["model"],
            f"{r['n_short']}/{r['n_long']}",
            fmt(r["plain_step_s"], 1e3),
            fmt(r["lightning_step_s"], 1e3),
            fmt(r["ratio"]),
            fmt(r["hooked_ratio"]) if "hooked_ratio" in r else "-",
            f"{(r['lightning_step_s']['median'] - r['plain_step_s']['median']) * 1e3:.2f}",
            fmt(r["lightning_fixed_s"]),
        ]
        for r in results
    ]
    header = ["model", "steps", "plain ms/step", "Lightning ms/step", "Lightning/plain"]
    header += ["hooked/plain"]
    return table(header + ["extra ms/step", "Lightning fixed s/fit"], rows)


def peak_tables(peaks: dict, rows: list[dict]) -> str:
    ops = [
        [n, f"{p['flops'] / 1e9:.3g}", fmt(p["seconds"], 1e3), f"{p['flop_per_s'] / 1e9:.1f}"]
        for n, p in peaks.items()
    ]
    models = [
        [
            r["model"],
            f"{r['flops'] / 1e9:.4g}",
            f"{r['lightning_flop_per_s'] / 1e9:.3g}",
            f"{r['plain_flop_per_s'] / 1e9:.3g}",
            f"{r['peak'] / 1e9:.1f} ({r['reference'].split(' ')[0]})",
            f"{100 * r['fraction']:.2g}%",
        ]
        for r in rows
    ]
    return "\n\n".join(
        [
            table(["op (forward, no grad)", "GFLOP/call", "ms/call", "GFLOP/s"], ops),
            table(
                ["model", "GFLOP/step", "Lightning GFLOP/s", "plain GFLOP/s", "peak GFLOP/s"]
                + ["Lightning % of peak"],
                models,
            ),
        ]
    )


def grid_tables(g: dict) -> str:
    rows = []
    for grid in ("stand_in", "repro_fig2"):
        runs = g[grid]
        for mode in ("process per cell", "worker"):
            r = runs[mode]
            rows.append(
                [
                    grid.replace("_", "-"),
                    mode,
                    f"{r['slots']} x {r['threads_per_slot']}",
                    r["counts"]["done"],
                    f"{r['wall_s']:.1f}",
                    f"{r['cells_per_hour']:.0f}",
                    f"{runs['speed-up']:.2f}" if mode == "worker" else "1",
                ]
            )
    header = ["grid", "runner", "slots x threads", "cells done", "wall s", "cells/hour"]
    header += ["speed-up (target >= 1.3 on repro-fig2)"]
    fixed = g["fixed_cell_s"]
    small, large = g.get("fixed_cells", ("?", "?"))
    marginal, marginal_cpu = g.get("fixed_marginal_s", {}), g.get("fixed_marginal_cpu_s", {})
    costs = [
        [
            mode,
            f"{fixed[mode]:.2f}",
            f"{marginal[mode]:.2f}" if mode in marginal else "-",
            f"{marginal_cpu[mode]:.2f}" if mode in marginal_cpu else "-",
        ]
        for mode in ("process per cell", "worker")
    ]
    if g.get("d5_training_s"):
        costs.append(
            [
                f"training of a d5 c128 cell ({FIG3_STEPS} x section-1 step)",
                f"{g['d5_training_s']:.1f}",
                "",
                "",
            ]
        )
    return "\n\n".join(
        [
            f"Stand-in grid: {g['grid']}. repro-fig2: `sweeps/repro_fig2.yaml`.",
            table(header, rows),
            "Fixed cost per cell: figure-3 cells (d5 c128) cut to one step and one test image "
            f"per set, one slot, grids of {small} and {large} cells: wall s per cell of the "
            f"{large}-cell grid, and the cost of one more cell (the slope between the grids; the "
            "target, <= 1 s, is the worker's), in wall and CPU seconds (CPU: the cell processes "
            "and workers, not W&B's service; not inflated by other jobs).",
            table(["per-cell cost", f"s per cell ({large})", "one more cell, s", "CPU s"], costs),
        ]
    )


def evaluation_table(e: dict) -> str:
    rows = [
        [
            r["model"],
            r["images"],
            fmt(r["plain_s"]),
            f"{r['plain_images_per_s']:.0f}",
            fmt(r["panels_s"]),
            f"{r['panels_images_per_s']:.0f}",
            f"{r['panels_s']['median'] - r['plain_s']['median']:.2f}",
        ]
        for r in e["models"]
    ]
    header = ["model", "test images", "test s", "images/s", "test s, with callbacks"]
    header += ["images/s, with callbacks", "callbacks s"]
    note = (
        f"{e['sets']} sets x {e['test_size']} images; the first test call of the process, which "
        f"also loads and builds the test sets, took {e['first_call_s']:.1f} s."
    )
    return note + "\n\n" + table(header, rows)


def print_report(report: dict) -> None:
    """The benchmark's Markdown tables, from the numbers main collected."""
    m = report["machine"]
    print(
        f"## Speed benchmark ({report['mode']} mode, {report['repeats']} repeats, "
        "median (min-max))\n"
    )
    machine = [[k, m[k]] for k in ("cpu", "cores", "torch_threads", "device_name", "torch")]
    machine += [["pytorch_lightning", m["pytorch_lightning"]]]
    loads = (m["load_average_start"][0], m["load_average_end"][0])
    machine += [["load average (1 min) start / end", f"{loads[0]:.2f} / {loads[1]:.2f}"]]
    clock = report.get("clock", "wall")
    machine += [["section 1 clock", "process CPU time" if clock == "cpu" else "wall time"]]
    print(table(["machine", ""], machine))
    sections = [
        ("framework_overhead", "1. Framework overhead (per training step; fixed cost per fit)"),
        ("peaks", "2. Fraction of peak (conv + linear FLOPs of forward + backward)"),
        ("grid_throughput", "3. Grid throughput (offline sweep runner)"),
        ("evaluation", "4. Evaluation throughput (trainer.test, untrained model)"),
    ]
    tables = {
        "framework_overhead": lambda: overhead_table(report["framework_overhead"]),
        "peaks": lambda: peak_tables(report["peaks"], report["fraction_of_peak"]),
        "grid_throughput": lambda: grid_tables(report["grid_throughput"]),
        "evaluation": lambda: evaluation_table(report["evaluation"]),
    }
    for key, title in sections:
        if key in report:
            print(f"\n### {title}\n")
            print(tables[key]())
    print(f"\nbenchmark wall time {report['wall_s']:.0f} s")
