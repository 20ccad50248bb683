"""`identity-crisis report`: the paper's figures and a summary table from many runs.

    identity-crisis report runs/sweeps/fig3_cnn_depth                     # an offline sweep
    identity-crisis report runs/sweeps/fig3_cnn_depth --seed 1 --hidden [7,14,20] --out runs/fig3
    identity-crisis report runs/sweeps/fig2_fcn --key [model.depth,model.activation]
    identity-crisis report --wandb-sweep ENTITY/PROJECT/SWEEP_ID          # a W&B sweep

It collects every run folder (a folder with `metrics.json`) under each PATH and every sweep cell
of the offline runner that has no result, or the runs of a W&B sweep, groups the runs into
configurations (runs that share every config value but the seed), and writes into --out
(default runs/report):

- `prediction_grid.png`: paper figures 2/3, one row per configuration, for one seed;
- `hidden_<label>.png`: paper figure 4, the hidden maps at initialization beside the trained ones;
- `curves_<key>`, `verdicts_<key>`, `curves_params` (.png and .svg): the scores against the
  swept key(s) and the parameter count;
- `constant_share_<key>`: the share of fitted seeds whose net is the constant against the first
  numeric swept key, one line per recipe, with 95% Wilson intervals, k/n and the logistic fit
  (shares.py, stats.py); with two swept keys, `heatmap_<key1>_<key2>_constant` and `_identity`:
  that share with k/n in each cell;
- `summary.md`: one table row per configuration, the shares of constant and identity nets (k of
  n fitted seeds, Wilson interval, unfitted runs counted) and where P(constant) crosses 50% per
  recipe, then every problem (failed, crashed, unfitted
  runs, broken sweep cells, missing seeds), which are NAMED there and left out of the means;
  a run folder with a file that cannot be read or used (say a metrics.json that is not a JSON
  object, or a truncated probe_predictions.npz) is a broken run, named with the file and what is
  wrong, and the report is built from the other runs;
- `report.json`: the numbers behind the table and the plots.

The swept keys are the config keys whose values differ between runs (bookkeeping such as the
seed, `run.*` and `data.root` aside), unless `--key` names them; then another varying key joins
the rows only where it would merge different runs, and a key with one value per row is named in a
note. With `--wandb-sweep`, the figures also go to a new W&B run (job_type "report", grouped
under the sweep id).

Exit codes: 0 written (problems are listed, not fatal); 2 a bad argument or nothing to report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jsonargparse.typing import PositiveInt

from identity_crisis import preflight, run_folder
from identity_crisis.errors import ConfigError
from identity_crisis.jsonio import write_json, write_text
from identity_crisis.options import CommandParser, HelpFormatter
from identity_crisis.report.grouping import (
    Configuration,
    configuration_numbers,
    find_problems,
    follow_note,
    group_configurations,
    mechanism_note,
    nothing_fitted,
    placed,
    problem_line,
    short_key_name,
    sort_value,
    swept_keys,
    unplaced_problems,
)
from identity_crisis.report.init_shares import init_share_figure, init_share_numbers
from identity_crisis.report.loading import (
    RunRecord,
    load_local,
    load_wandb_sweep,
    log_report_to_wandb,
    shown_path,
    wandb_api,
)
from identity_crisis.report.panels import (
    GRID_PAD,
    GRID_SCALE,
    HIDDEN_GAP,
    HIDDEN_STRIP,
    hidden_choice,
    hidden_figures,
    prediction_grid,
)
from identity_crisis.report.plots import plot_figures, save_figure
from identity_crisis.report.shares import share_numbers, transition_line, transitions
from identity_crisis.report.summary import summary_markdown, table_rows
from identity_crisis.tracking import load_env_file, resolve_wandb_mode

# The names other code and the tests import from `identity_crisis.report`.
__all__ = [
    "GRID_PAD",
    "GRID_SCALE",
    "HIDDEN_GAP",
    "HIDDEN_STRIP",
    "Configuration",
    "RunRecord",
    "build_report",
    "follow_note",
    "group_configurations",
    "load_local",
    "main",
    "parse_args",
    "swept_keys",
]

# The first word of the figures plot_figures draws: what --redraw replaces.
REDRAWN = ("curves", "verdicts", "constant", "heatmap")
# Beside the runs it reads (run folders and sweeps go under runs/, which git ignores).
DEFAULT_OUT = "runs/report"


# --- the one path from records to outputs -------------------------------------------------------
def build_report(
    records: list[RunRecord],
    out: Path,
    sources: list[str],
    keys: list[str] | None = None,
    seed=None,
    hidden: list[int] | None = None,
    include_unfitted: bool = False,
    init_share: list[int] | None = None,
) -> dict:
    """Write every output for these records into `out`; return report.json's content."""
    everything, records = records, [r for r in records if placed(r)]
    keys, also, follow = swept_keys(records, keys or [])
    seeds = sorted({r.seed for r in records if r.seed is not None}, key=sort_value)
    if seed is None:
        seed = seeds[0] if seeds else None
    elif seed not in seeds:
        raise ConfigError(
            f"--seed {seed} is not a seed of these runs; seeds present: "
            f"{', '.join(map(str, seeds)) or 'none'}"
        )
    configs = group_configurations(records, keys)
    numbers = [configuration_numbers(c, keys, include_unfitted) for c in configs]
    shares = [share_numbers(c, keys) for c in configs]
    fits = transitions(shares, keys, configs, follow)
    # Checked before anything is written, so a bad --hidden leaves no half report.
    chosen = hidden_choice(configs, hidden)
    at_init = init_share_numbers(configs, keys, init_share) if init_share else None
    out.mkdir(parents=True, exist_ok=True)
    remove_previous_outputs(out)
    notes = [f"also varying, so kept apart: {', '.join(also)}"] if also else []
    notes += [follow_note(key, configs) for key in follow]
    hidden_files, hidden_notes = hidden_figures(chosen, seed, out)
    grid, grid_info, grid_notes = prediction_grid(configs, seed, out)
    if grid is None:
        notes.append(
            f"no prediction grid: no run of seed {seed} has a usable {run_folder.PROBE_PREDICTIONS}"
        )
    notes += grid_notes + hidden_notes
    notes += [note for n in numbers if (note := mechanism_note(n))]
    files = ([grid] if grid else []) + hidden_files + plot_figures(numbers, keys, out, shares, fits)
    if at_init:
        key = fits["key"] if fits else keys[0] if keys else None
        if key is not None:
            figure = init_share_figure(at_init, keys, key)
            files += save_figure(figure, out, f"init_share_{short_key_name(key, keys)}")
    report = {
        "sources": sources,
        "keys": keys,
        "seed": seed,
        "seeds": seeds,
        "include_unfitted": include_unfitted,
        "configurations": numbers,
        "shares": shares,
        "transitions": fits,
        "init_share": at_init,
        "unplaced": len(everything) - len(records),
        "nothing_fitted": nothing_fitted(everything),
        "problems": find_problems(configs, include_unfitted) + unplaced_problems(everything),
        "grid": grid_info,
        "notes": notes,
        "files": [p.name for p in files],
    }
    columns, rows = table_rows(numbers, keys)
    write_text(out / "summary.md", summary_markdown(report, columns, rows))
    report["table"] = {"columns": columns, "data": rows}
    write_json(out / "report.json", report)
    return report


def redraw(folder: Path) -> list[str]:
    """Draw the matplotlib figures of an earlier report again from its report.json, with this
    version's plotting (the runs themselves need not be at hand); the prediction grid and the
    hidden maps, drawn from the runs' files, stay as they are. A figure this version would not
    draw from those numbers (say a heatmap of means, where the shares are now drawn, and an old
    report.json has none) is removed. Returns the names of the files written."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"--redraw {folder}: no readable report.json ({error})") from None
    numbers, keys = report.get("configurations"), report.get("keys")
    if not isinstance(numbers, list) or not isinstance(keys, list):
        raise ConfigError(f"--redraw {folder}: report.json has no configurations and keys")
    drawn = plot_figures(numbers, keys, folder, report.get("shares"), report.get("transitions"))
    names = [p.name for p in drawn]
    for name in report.get("files", []):
        if name.endswith((".png", ".svg")) and name.split("_")[0] in REDRAWN and name not in names:
            (folder / name).unlink(missing_ok=True)
    kept = [n for n in report.get("files", []) if (folder / n).exists() and n not in names]
    report["files"] = kept + names
    write_json(folder / "report.json", report)
    return names


def remove_previous_outputs(out: Path) -> None:
    """A report written again into the same folder must not leave the last one's figures (say
    a hidden map of a depth no longer asked for) beside the new ones; only the files the last
    report.json lists are removed, never anything else of the user's."""
    try:
        previous = json.loads((out / "report.json").read_text()).get("files", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    for name in previous:
        if isinstance(name, str) and name == Path(name).name:
            (out / name).unlink(missing_ok=True)


def command_parser() -> CommandParser:
    parser = CommandParser(
        prog="identity-crisis report",
        description="Figures and a summary table from run folders, offline sweeps or a W&B sweep.",
        # The module docstring's examples, as written.
        epilog="examples:\n" + __doc__.split("\n\n")[1],
        formatter_class=HelpFormatter,
    )
    parser.option(
        "paths", nargs="*", type=str, default=[], metavar="PATH", help="folders holding run folders"
    )
    parser.option(
        "--redraw",
        type=str | None,
        default=None,
        metavar="REPORT_FOLDER",
        help="draw an earlier report's figures again from its report.json (no runs needed)",
    )
    parser.option("--out", type=str, default=DEFAULT_OUT, help="output folder")
    parser.option("--replace", action="store_true", help="write over an earlier report in --out")
    figure_options(parser)
    parser.option(
        "--wandb-sweep",
        type=str | None,
        default=None,
        metavar="ENTITY/PROJECT/ID",
        help="read a W&B sweep's runs and log the figures to a new W&B run",
    )
    parser.option(
        "--include-debug",
        action="store_true",
        help="count debugging runs (fast_dev_run, capped batches; metrics.json status debug) as "
        "results; left out by default",
    )
    parser.option(
        "--include-unfitted",
        action="store_true",
        help="count runs that did not fit in the means (still listed as problems)",
    )
    return parser


def figure_options(parser: CommandParser) -> None:
    """The options that choose what the figures show."""
    parser.option(
        "--key",
        type=list[str] | str,
        as_list=True,
        default=[],
        help="the swept keys to order and plot by, e.g. [model.depth,model.activation] (default: "
        "every key that differs between runs)",
        valid="give config keys as a list, e.g. [model.depth,model.activation]",
    )
    parser.option(
        "--seed",
        type=int | None,
        default=None,
        help="seed of the prediction grid",
        valid="give an integer",
    )
    parser.option(
        "--hidden",
        type=list[PositiveInt] | PositiveInt | None,
        as_list=True,
        default=None,
        help="model.depth values of the hidden-map figures, e.g. [7,14,20]",
        valid="give model.depth values as a list, e.g. [7,14,20]",
    )
    parser.option(
        "--init-share",
        type=list[PositiveInt] | PositiveInt | None,
        as_list=True,
        default=None,
        metavar="LAYERS",
        help="also draw the input share at init of these hidden layers (e.g. [5,10,19]) against "
        "the transition key: each run's net drawn again at init with its seed, measured on 20 "
        "MNIST test digits",
        valid="give hidden layers (1, 2, ...) as a list, e.g. [5,10,19]",
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options, typed and checked; a bad one is one line and exit 2."""
    try:
        args = command_parser().parse(argv)
        check_args(args, argv)
    except ConfigError as error:
        print(f"identity-crisis report: error: {error}", file=sys.stderr)
        sys.exit(2)
    return args


def check_args(args: argparse.Namespace, argv: list[str]) -> None:
    """What the types cannot say: which arguments go together, and keys as one list."""
    if args.redraw and (args.paths or args.wandb_sweep):
        raise ConfigError("--redraw reads a report folder alone: give no PATH or --wandb-sweep")
    if not args.paths and not args.wandb_sweep and not args.redraw:
        raise ConfigError("give at least one PATH or --wandb-sweep ENTITY/PROJECT/ID")
    # A repeated --key would keep only its last value, as every list option does.
    if sum(a == "--key" or a.startswith("--key=") for a in argv) > 1:
        raise ConfigError("--key is given more than once; give the keys as one list, --key [a,b]")
    joined = next((key for key in args.key if "," in key), None)
    if joined is not None:
        raise ConfigError(
            f"--key={joined} is not valid; give several keys as a list, --key [{joined}]"
        )


def remove_empty_folders(root: Path) -> None:
    """`root` and the folders under it that hold no file, deepest first."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(root.iterdir()):
        root.rmdir()


def main(argv: list[str] | None = None, api=None) -> None:
    """`identity-crisis report PATH... [options]`; `api` replaces wandb.Api() (tests)."""
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.redraw:
        try:
            names = redraw(Path(args.redraw))
        except ConfigError as error:
            print(f"identity-crisis report: error: {error}", file=sys.stderr)
            sys.exit(2)
        print(f"redrawn in {args.redraw}: {', '.join(names) or 'no figure'}")
        return
    out = Path(args.out).resolve()
    try:
        preflight.check_non_empty_path("--out", args.out)
        for path in args.paths:
            if not Path(path).is_dir():
                what = "does not exist" if not Path(path).exists() else "is not a folder"
                raise ConfigError(
                    f"PATH {path} {what}; give folders that hold run folders or sweep cells"
                )
        preflight.check_output_folder(out, "report.json", "report", args.replace)
        records = load_local(args.paths, skip=out) if args.paths else []
        sources = [shown_path(str(Path(p).resolve())) for p in args.paths]
        if args.wandb_sweep:
            load_env_file()
            records += load_wandb_sweep(args.wandb_sweep, api or wandb_api(), out / "wandb-files")
            sources.append(f"wandb:{args.wandb_sweep}")
        debug = [record for record in records if record.status == run_folder.DEBUG]
        if args.include_debug:
            for record in debug:
                record.status = run_folder.OK
        elif debug:
            records = [record for record in records if record.status != run_folder.DEBUG]
            print(f"left out {len(debug)} debugging run(s) (--include-debug counts them)")
        if not records:
            raise ConfigError(
                f"no runs found under {', '.join(sources)}: no {run_folder.METRICS} and no sweep "
                "cells"
            )
        fresh = not out.exists()
        try:
            report = build_report(
                records,
                out,
                sources,
                args.key,
                args.seed,
                args.hidden,
                args.include_unfitted,
                args.init_share,
            )
        except OSError:
            if fresh:  # a folder this report made and could not fill (a full disk) goes again
                remove_empty_folders(out)
            raise
    except ConfigError as error:
        print(f"identity-crisis report: error: {error}", file=sys.stderr)
        sys.exit(2)

    configs = report["configurations"]
    unplaced = f" (and {report['unplaced']} broken in none)" if report["unplaced"] else ""
    print(
        f"{sum(c['runs'] for c in configs)} runs in {len(configs)} configuration(s){unplaced}; "
        f"swept: {', '.join(report['keys']) or 'nothing'}; seeds {report['seeds']}; grid seed "
        f"{report['seed']}"
    )
    if report["nothing_fitted"]:
        print(report["nothing_fitted"])
    for note in report["notes"]:
        print(f"note: {note}")
    if report["transitions"]:
        for fit in report["transitions"]["recipes"]:
            print(transition_line(fit, report["transitions"]["key"]))
    print(f"problems ({len(report['problems'])}):" if report["problems"] else "problems: none")
    for problem in report["problems"]:
        print(f"  {problem_line(problem)}")
    if args.wandb_sweep:
        resolve_wandb_mode()
        files = [out / name for name in report["files"]]
        log_report_to_wandb(out, files, args.wandb_sweep, report["table"])
    print(f"report: {out / 'summary.md'}")
