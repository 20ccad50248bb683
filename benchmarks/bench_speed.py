"""Speed benchmark of identity-crisis: where the time of a run and of a sweep goes.

    python benchmarks/bench_speed.py                       # full: ~15 min on 2 idle CPU cores
    python benchmarks/bench_speed.py --quick               # ~2 min: checks that it works
    python benchmarks/bench_speed.py --device cuda --out bench_cuda.json
    python benchmarks/bench_speed.py --threads 1 --repeats 5
    python benchmarks/bench_speed.py --sections [1,3]          # only sections 1 and 3
    python benchmarks/bench_speed.py --dry-run --device cuda   # parse the options, measure nothing

Run it from anywhere on an otherwise idle machine, with the data root in $IDC_DATA_DIR (MNIST and
Fashion-MNIST). Every number is a median over `--repeats` repeats (3; 2 with --quick), printed
as `median (min-max)`. Standard output is one markdown table per section, ready for
BENCHMARKS.md; progress goes to standard error; `--out` gets every raw time as JSON, with the
machine (CPU model, cores, threads, torch and Lightning versions, device, load average before and
after: a start load well above 0 means other work shared the machine and the times are noisy).

Sections 1, 2 and 4 run in this process with `--threads` torch threads (default: torch's default,
one per core); section 3 starts subprocesses as the sweep runner does.

1. Framework overhead. Time per training step of the project's LightningModule under a Lightning
   Trainer configured as the `fit` command configures it (`trainer_defaults.TRAINER_DEFAULTS`,
   its callbacks, a WandbLogger in disabled mode, no progress bar) against a plain PyTorch
   loop over the same model, the optimizer of its `configure_optimizers()` (fused Adam) and the
   same training image, full batch, MSE, with the module's `loss.item()` every `check_every` steps.
   The module runs several optimizer steps per Lightning training_step (up to the next loss
   check), which is what keeps the ratio near 1 for the smallest nets, and skips Lightning's
   per-step hook dispatch when no callback overrides a step hook; "hooked" times the same Trainer
   with one no-op `on_before_optimizer_step` callback, the path such a run takes.
   Each repeat times a short and a long step budget (chosen from a warm-up so the long one takes
   ~6 s, 0.5 s with --quick); ms/step = (t_long - t_short) / (n_long - n_short), so fit start and
   teardown cancel, and the fixed cost of one fit (Trainer construction, fit set-up, teardown) is
   t_short - n_short * ms/step. Models: CNN depth 1, 5, 20 at 128 channels (5x5), FCN depth 1, 6
   at width 784 (--quick leaves out CNN depth 20).
2. Fraction of peak. FLOPs of one training step, counted analytically for conv and linear layers
   only: a multiply-add is 2 FLOPs; a conv's forward is 2*k*k*Cin*Cout*H*W per image (stride 1,
   same padding), a linear layer's 2*in*out; the backward is the weight gradient (= forward) plus
   the input gradient (= forward) for every layer but the first (its input needs no gradient):
   step = 3 * sum(forward) - forward(first layer). Biases, ReLU, the loss and the Adam update are
   not counted (for FCNs the Adam update, ~10 elementwise ops per parameter, is of the same order
   as the 6 counted FLOPs per parameter, so their fraction understates the work). Achieved FLOP/s
   = that count / the section-1 step time, against the machine's rate on the same ops measured in
   the same run: a 2048x2048 fp32 matmul (the FCNs' reference) and a 128->128 5x5 conv on
   64x128x28x28 (16 images with --quick; the CNNs' reference), forward, no grad; the same conv on
   the one image a training step sees is listed too. On CUDA, PyTorch's defaults apply to both
   the model and the reference ops (convs may use TF32, matmuls do not).
3. Grid throughput. The real offline runner (`identity_crisis.sweep.OfflineRunner`, output in a
   temp dir, its default slots: one 1-thread worker per usable core; on CUDA 4 cells on GPU 0)
   runs each grid twice: a process per cell (`--isolate`) and a worker per slot that imports
   once and trains cell after cell. Grids: a SMALL stand-in for the figure-3 grid (CNN depths
   1-4 at 32 channels, 200 steps, data.test_size 16, seed 0; --quick: depths 1-2 at 8 channels,
   20 steps, test_size 4) and `sweeps/repro_fig2.yaml` (18 real cells; --quick: 4 of them at
   100 steps). Reported: wall time, cells per hour, the speed-up. Then the fixed cost of a cell:
   figure-3 cells (CNN depth 5, 128 channels) cut to max_steps=1 and data.test_size=1, one slot,
   each way, in grids of 2 and 8 cells (--quick: 1 and 3): wall time per cell of the larger
   grid, and the cost of one more cell (the slope between the two grids, which amortises the
   worker's start-up away) in wall and CPU seconds. A cell's fixed cost: process start and
   imports (process per cell only), the command line, W&B (offline) init and finish, data
   loading, one step, the probe panels, and teardown.
4. Evaluation throughput. Test images per second of `trainer.test(...)` on an untrained model
   at the default test sets and sizes (7 sets x data.test_size=100; --quick: 10), first without
   callbacks, then with the command's callbacks (ProbePanels with initial weights recorded as
   after a fit, RunSummary; files go to a temp dir); for CNN depth 5 and 20 (128 channels) and
   FCN depth 6 (--quick leaves out CNN depth 20). The first test call, which also loads and
   builds the test sets, is reported on its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Literal

import pytorch_lightning
import torch
import torch.nn.functional as F
import wandb
import yaml
from jsonargparse.typing import PositiveInt, restricted_number_type
from pytorch_lightning import Callback, Trainer
from speed_tables import FIG3_STEPS, print_report, stats
from torch import nn

from datamodules import SingleExampleDataModule
from identity_crisis import run_folder
from identity_crisis.callbacks import ProbePanels, RunSummary
from identity_crisis.errors import ConfigError
from identity_crisis.options import CommandParser
from identity_crisis.quiet import QuietWandbLogger
from identity_crisis.sweep import OfflineRunner
from identity_crisis.sweep_file import load_sweep
from identity_crisis.trainer_defaults import TRAINER_DEFAULTS
from lightning_modules import CNN, FCN
from lightning_modules.step_path import cheap_cuda_checks

REPO = Path(__file__).resolve().parent.parent
Section = restricted_number_type("Section", int, [(">=", 1), ("<=", 4)])
MODELS = {  # name: (class, arguments); the config files' defaults otherwise
    "cnn-d1-c128": (CNN, {"depth": 1, "channels": 128}),
    "cnn-d5-c128": (CNN, {"depth": 5, "channels": 128}),
    "cnn-d20-c128": (CNN, {"depth": 20, "channels": 128}),
    "fcn-d1-w784": (FCN, {"depth": 1, "width": 784, "lr": 1e-4}),
    "fcn-d6-w784": (FCN, {"depth": 6, "width": 784, "lr": 1e-4}),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    cls, kwargs = MODELS[name]
    return cls(**kwargs)


def machine_info(device: str, threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": threads,
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "python": platform.python_version(),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else cpu,
        "load_average_start": os.getloadavg(),
    }


def make_trainer(steps: int, device: str, root: str, callbacks: list | None = None) -> Trainer:
    """A Trainer as the `fit` command builds it (TRAINER_DEFAULTS), with W&B disabled."""
    logger = QuietWandbLogger(mode="disabled", save_dir=root, settings=wandb.Settings(quiet=True))
    options = {**TRAINER_DEFAULTS, "max_steps": steps, "enable_progress_bar": False}
    return Trainer(
        **options,
        accelerator="gpu" if device == "cuda" else "cpu",
        logger=logger,
        callbacks=callbacks if callbacks is not None else [ProbePanels(), RunSummary()],
        default_root_dir=root,
    )


# --- 1. framework overhead ---------------------------------------------------------------------
class StepHook(Callback):
    """A no-op step hook: it brings back Lightning's per-step hook dispatch (step_path.py), the
    path of a run whose callbacks act on every step."""

    def on_before_optimizer_step(self, *_) -> None:
        pass


def time_lightning(
    name: str, steps: int, data, device: str, root: str, clock, hooked: bool = False
) -> float:
    model = build(name)
    callbacks = [ProbePanels(), RunSummary(), *([StepHook()] if hooked else [])]
    sync(device)
    start = clock()
    make_trainer(steps, device, root, callbacks).fit(model, datamodule=data)
    wandb.finish()  # as a run ends; the next Trainer gets a W&B run of its own
    sync(device)
    return clock() - start


def time_plain(name: str, steps: int, images: torch.Tensor, device: str, clock) -> float:
    model = build(name).to(device)
    optimizer = model.configure_optimizers()
    check_every = model.hparams.check_every
    x = images.to(device)
    sync(device)
    start = clock()
    # As in a script that never imported Lightning (step_path.cheap_cuda_checks).
    with cheap_cuda_checks(torch.device(device)):
        for step in range(steps):
            loss = F.mse_loss(model(x), x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if (step + 1) % check_every == 0:
                loss.item()
    sync(device)
    return clock() - start


def framework_overhead(names, data, device, repeats, target_s, root, clock) -> list[dict]:
    """clock: time.perf_counter, or time.process_time on a machine other jobs load (with one
    thread, waiting for a core is then not counted, work is)."""
    results = []
    for name in names:
        time_plain(name, 2, data.train_images, device, clock)  # warm-up: kernels, allocator
        time_lightning(name, 2, data, device, root, clock)
        n, elapsed = 3, time_plain(name, 3, data.train_images, device, clock)
        while elapsed < target_s / 5:  # the estimate of the step time takes >= 1/5 of a budget
            n *= 2
            elapsed = time_plain(name, n, data.train_images, device, clock)
        estimate = elapsed / n
        n_long = int(min(max(target_s / estimate, 20), 5000))
        n_short = max(2, n_long // 5)
        log(f"[1] {name}: ~{estimate * 1e3:.1f} ms/step, budgets {n_short}/{n_long} steps")
        timers = {
            "lightning": lambda n, name=name: time_lightning(name, n, data, device, root, clock),
            "hooked": lambda n, name=name: time_lightning(
                name, n, data, device, root, clock, hooked=True
            ),
            "plain": lambda n, name=name: time_plain(name, n, data.train_images, device, clock),
        }
        raw = {kind: [] for kind in timers}
        for _ in range(repeats):  # interleaved, so a slow spell of the machine hits both
            for kind, timer in timers.items():
                raw[kind].append({"t_short": timer(n_short), "t_long": timer(n_long)})
        result = {"model": name, "n_short": n_short, "n_long": n_long, "raw": raw}
        for kind, times in raw.items():
            per_step = [(t["t_long"] - t["t_short"]) / (n_long - n_short) for t in times]
            fixed = [t["t_short"] - n_short * s for t, s in zip(times, per_step, strict=True)]
            result[f"{kind}_step_s"] = stats(per_step)
            result[f"{kind}_fixed_s"] = stats(fixed)
        for kind, key in (("lightning", "ratio"), ("hooked", "hooked_ratio")):
            ratios = [
                (lt["t_long"] - lt["t_short"]) / (pt["t_long"] - pt["t_short"])
                for lt, pt in zip(raw[kind], raw["plain"], strict=True)
            ]
            result[key] = stats(ratios)
        results.append(result)
    return results


# --- 2. fraction of peak -----------------------------------------------------------------------
def train_step_flops(model: nn.Module, images: int = 1) -> int:
    """Conv and linear FLOPs of forward + backward (see the module docstring)."""
    _, h, w = model.image_shape
    forward = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            forward.append(2 * kh * kw * m.in_channels * m.out_channels * h * w // m.groups)
        elif isinstance(m, nn.Linear):
            forward.append(2 * m.in_features * m.out_features)
    return images * (3 * sum(forward) - forward[0])


def peak_rates(device: str, repeats: int, conv_batch: int) -> dict:
    conv = nn.Conv2d(128, 128, 5, padding=2).to(device)
    a, b = (torch.randn(2048, 2048, device=device) for _ in range(2))
    batch, one = (torch.randn(n, 128, 28, 28, device=device) for n in (conv_batch, 1))
    ops = {
        "matmul 2048x2048x2048": (lambda: a @ b, 2 * 2048**3),
        f"conv 128->128 5x5 28x28 batch {conv_batch}": (
            lambda: conv(batch),
            2 * 25 * 128 * 128 * 784 * conv_batch,
        ),
        "conv 128->128 5x5 28x28 batch 1": (lambda: conv(one), 2 * 25 * 128 * 128 * 784),
    }
    results = {}
    with torch.no_grad():
        for name, (op, flops) in ops.items():
            op()  # warm-up
            calls = 1 if flops > 1e9 else 20  # batch 1: time 20 calls at once
            seconds = []
            for _ in range(repeats):
                sync(device)
                start = time.perf_counter()
                for _ in range(calls):
                    op()
                sync(device)
                seconds.append((time.perf_counter() - start) / calls)
            results[name] = {"flops": flops, "seconds": stats(seconds), "raw": seconds}
            results[name]["flop_per_s"] = flops / results[name]["seconds"]["median"]
    return results


def fraction_of_peak(overhead: list[dict], peaks: dict) -> list[dict]:
    matmul, conv = list(peaks)[:2]
    rows = []
    for r in overhead:
        flops = train_step_flops(build(r["model"]))
        reference = conv if r["model"].startswith("cnn") else matmul
        peak = peaks[reference]["flop_per_s"]
        row = {"model": r["model"], "flops": flops, "reference": reference, "peak": peak}
        for kind in ("lightning", "plain"):
            row[f"{kind}_flop_per_s"] = flops / r[f"{kind}_step_s"]["median"]
        row["fraction"] = row["lightning_flop_per_s"] / peak
        rows.append(row)
    return rows


# --- 3. grid throughput ------------------------------------------------------------------------
def run_grid(sweep_file: Path, out: Path, device: str, isolate: bool, extra=()) -> dict:
    """One pass of the real offline runner with its default slots: a worker per slot that trains
    cell after cell, or (`isolate`) a process per cell."""
    sweep = load_sweep(sweep_file)
    gpus = ["0"] if device == "cuda" else None
    runner = OfflineRunner(
        sweep, out, gpus=gpus, per_gpu=4, extra_args=list(extra), isolate=isolate
    )
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        counts = runner.run()
    wall = time.perf_counter() - start
    cells = [
        run_folder.read_cell_record(c.folder, run_folder.CELL_DONE) for c in runner.cells if c.done
    ]
    if counts["done"] != len(runner.cells):
        log(printed.getvalue())
        for cell in runner.cells:
            if not cell.done and (cell.folder / run_folder.CELL_LOG).is_file():
                log((cell.folder / run_folder.CELL_LOG).read_text()[-3000:])
    return {
        "slots": len(runner.slots),
        "threads_per_slot": runner.slots[0].get("OMP_NUM_THREADS", "default"),
        "counts": counts,
        "wall_s": wall,
        "cells_per_hour": counts["done"] / wall * 3600,
        "cell_seconds": [c["seconds"] for c in cells],
    }


def children_cpu_s() -> float:
    """CPU seconds of the cell processes and workers this process has waited for: unlike wall
    time, not inflated by other jobs on a loaded machine. W&B's service process is not counted."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_sweep(path: Path, name: str, config: str, parameters: dict) -> Path:
    spec = {
        "name": name,
        "program": "identity_crisis/cli.py",
        "method": "grid",
        "command": ["${env}", "${interpreter}", "${program}", "fit", "--config", config]
        + ["${args}"],
        "parameters": {
            k: {"values": v} if isinstance(v, list) else {"value": v} for k, v in parameters.items()
        },
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def both_ways(name: str, sweep_file: Path, tmp: Path, device: str, extra=()) -> dict:
    runs = {}
    for mode in ("process per cell", "worker"):
        out = tmp / name / mode.replace(" ", "_")
        runs[mode] = run_grid(sweep_file, out, device, mode == "process per cell", extra)
        log(f"[3] {name}, {mode}: {runs[mode]['wall_s']:.1f} s, {runs[mode]['counts']}")
    runs["speed-up"] = runs["process per cell"]["wall_s"] / runs["worker"]["wall_s"]
    return runs


def grid_throughput(quick, device, tmp: Path, d5_step_s: float | None) -> dict:
    """Cells per hour, a process per cell against the worker, on the stand-in figure-3 grid and
    on repro_fig2 (18 real cells; --quick: its first 4 at 100 steps); and the fixed cost of a
    cell: the wall time per cell of one-step, one-image cells, one slot, each way."""
    depths, channels, steps, test_size = (
        ([1, 2], 8, 20, 4) if quick else ([1, 2, 3, 4], 32, 200, 16)
    )
    grid = f"CNN depths {depths}, {channels} channels, {steps} steps, test_size {test_size}, 1 seed"
    stand_in = write_sweep(
        tmp / "bench_grid.yaml",
        "bench_grid",
        "configs/cnn.yaml",
        {
            "model.depth": depths,
            "model.channels": channels,
            "trainer.max_steps": steps,
            "data.test_size": test_size,
            "seed_everything": 0,
        },
    )
    log(f"[3] stand-in grid: {grid}")
    report = {"grid": grid, "stand_in": both_ways("stand-in", stand_in, tmp, device)}
    fig2 = REPO / "sweeps" / "repro_fig2.yaml"
    fig2_extra = ["--trainer.max_steps=100"] if quick else []
    if quick:  # the first 4 cells: a copy of the file with one seed and two depths
        spec = yaml.safe_load(fig2.read_text())
        spec["parameters"]["seed_everything"] = {"values": [0]}
        spec["parameters"]["model.depth"] = {"values": [1, 2]}
        fig2 = tmp / "repro_fig2_quick.yaml"
        fig2.write_text(yaml.safe_dump(spec, sort_keys=False))
    report["repro_fig2"] = both_ways("repro_fig2", fig2, tmp, device, fig2_extra)
    # Fixed cost: figure-3 cells (d5, 128 channels) cut to one step and one image per set, a
    # small and a large grid each way: the slope between them is the cost of one more cell, the
    # worker's start-up amortised away.
    sizes = (1, 3) if quick else (2, 8)
    wall, cpu = {}, {}
    for mode in ("process per cell", "worker"):
        for n in sizes:
            spec = {"model.depth": 5, "trainer.max_steps": 1, "data.test_size": 1}
            fixed = write_sweep(
                tmp / f"bench_fixed_{n}.yaml",
                f"bench_fixed_{n}",
                "configs/cnn.yaml",
                {**spec, "seed_everything": list(range(n))},
            )
            out = tmp / "fixed" / mode.replace(" ", "_") / str(n)
            runner = OfflineRunner(load_sweep(fixed), out, workers=1, isolate=mode != "worker")
            start, cpu_start = time.perf_counter(), children_cpu_s()
            with contextlib.redirect_stdout(io.StringIO()):
                counts = runner.run()
            wall[mode, n] = time.perf_counter() - start
            cpu[mode, n] = children_cpu_s() - cpu_start
            log(f"[3] fixed cost, {mode}, {n} cells: {wall[mode, n]:.1f} s ({counts})")
    small, large = sizes
    report["fixed_cells"] = sizes
    report["fixed_cell_s"] = {m: wall[m, large] / large for m in ("process per cell", "worker")}
    report["fixed_marginal_s"] = {
        m: (wall[m, large] - wall[m, small]) / (large - small) for m in report["fixed_cell_s"]
    }
    report["fixed_marginal_cpu_s"] = {
        m: (cpu[m, large] - cpu[m, small]) / (large - small) for m in report["fixed_cell_s"]
    }
    report["d5_training_s"] = FIG3_STEPS * d5_step_s if d5_step_s else None
    return report


# --- 4. evaluation throughput ------------------------------------------------------------------
def time_test(model, data, device, root: str, panels: bool) -> float:
    callbacks = [ProbePanels(), RunSummary()] if panels else []
    trainer = make_trainer(1, device, root, callbacks)
    if model.train_images.numel() == 0:  # what a fit captures from its first batch
        data.setup("fit")
        model.train_images = data.train_images.clone()
    if panels:  # the initial weights a fit records, for the hidden_init panel
        callbacks[0].on_fit_start(trainer, model)
    sync(device)
    start = time.perf_counter()
    trainer.test(model, datamodule=data, verbose=False)
    sync(device)
    seconds = time.perf_counter() - start
    wandb.finish()
    return seconds


def evaluation(names, test_size, device, repeats, root: str) -> dict:
    data = SingleExampleDataModule(download=False, test_size=test_size)
    first = time_test(build("fcn-d6-w784"), data, device, root, panels=False)
    images = sum(len(t) for t in data.test_inputs.values())
    log(f"[4] first test call (loads the test sets): {first:.1f} s, {images} images")
    results = []
    for name in names:
        model = build(name)
        raw = {"plain": [], "panels": []}
        for _ in range(repeats):
            for kind in raw:
                raw[kind].append(time_test(model, data, device, root, panels=kind == "panels"))
        log(f"[4] {name}: {raw}")
        result = {"model": name, "images": images, "raw": raw}
        for kind, times in raw.items():
            result[f"{kind}_s"] = stats(times)
            result[f"{kind}_images_per_s"] = images / statistics.median(times)
        results.append(result)
    return {
        "first_call_s": first,
        "test_size": test_size,
        "sets": len(data.test_inputs),
        "models": results,
    }


# --- main --------------------------------------------------------------------------------------
def command_parser() -> CommandParser:
    """The app's commands' parser (identity_crisis.options): their list syntax, their errors."""
    parser = CommandParser(prog="bench_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, small sets: a check")
    parser.add_argument(
        "--dry-run", action="store_true", help="parse the command line, measure nothing"
    )
    parser.option(
        "--device", type=Literal["cpu", "cuda"], default="cpu", valid="choose one of cpu, cuda"
    )
    parser.add_argument("--out", type=str | None, default=None, help="JSON file of raw numbers")
    parser.option(
        "--threads", type=PositiveInt, default=torch.get_num_threads(), valid="give an integer >= 1"
    )
    parser.option(
        "--repeats",
        type=PositiveInt | None,
        default=None,
        help="default 3 (2 with --quick)",
        valid="give an integer >= 1",
    )
    parser.option(
        "--sections",
        type=list[Section] | Section,
        as_list=True,
        default=[1, 2, 3, 4],
        help="which sections, e.g. [1,3]",
        valid="give sections from 1-4 as a list, e.g. [1,3]",
    )
    parser.option(
        "--clock",
        type=Literal["wall", "cpu"],
        default="wall",
        help="section 1's clock: wall time, or this process's CPU time (a loaded machine)",
        valid="choose one of wall, cpu",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    try:
        args = command_parser().parse(sys.argv[1:] if argv is None else argv)
    except ConfigError as error:
        print(f"bench_speed.py: error: {error}", file=sys.stderr)
        sys.exit(2)  # a usage error, as argparse's
    if args.dry_run:
        print("arguments parsed; nothing measured (dry run)")
        return
    args.sections = set(args.sections)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine: nothing measured (use --device cpu).")
        return
    out = Path(args.out).resolve() if args.out else None
    os.chdir(REPO)  # the sweep commands name configs/ and identity_crisis/ relative to it
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    device, started = args.device, time.perf_counter()
    report = {"mode": "quick" if args.quick else "full", "repeats": repeats, "clock": args.clock}
    report["machine"] = machine_info(device, args.threads)
    if report["machine"]["load_average_start"][0] > 0.5:
        log(f"warning: load average {report['machine']['load_average_start']}: times are noisy")

    with tempfile.TemporaryDirectory(prefix="idc-bench-") as tmp:
        tmp = Path(tmp)
        data = SingleExampleDataModule(download=False)
        data.setup("fit")
        names = [n for n in MODELS if not (args.quick and n == "cnn-d20-c128")]
        d5_step = None
        if {1, 2} & args.sections:
            clock = time.process_time if args.clock == "cpu" else time.perf_counter
            budget_s = 0.5 if args.quick else 6.0
            overhead = framework_overhead(
                names, data, device, repeats, budget_s, str(tmp / "fits"), clock
            )
            report["framework_overhead"] = overhead
            d5 = next(r for r in overhead if r["model"] == "cnn-d5-c128")
            d5_step = d5["lightning_step_s"]["median"]
        if 2 in args.sections:
            peaks = peak_rates(device, 3 if args.quick else 5, 16 if args.quick else 64)
            report["peaks"] = peaks
            report["fraction_of_peak"] = fraction_of_peak(overhead, peaks)
        if 3 in args.sections:
            report["grid_throughput"] = grid_throughput(args.quick, device, tmp, d5_step)
        if 4 in args.sections:
            eval_names = [n for n in ("cnn-d5-c128", "cnn-d20-c128", "fcn-d6-w784") if n in names]
            report["evaluation"] = evaluation(
                eval_names, 10 if args.quick else 100, device, repeats, str(tmp / "test")
            )
    report["machine"]["load_average_end"] = os.getloadavg()
    report["torch_threads_end"] = torch.get_num_threads()
    report["wall_s"] = time.perf_counter() - started

    print_report(report)
    if out:
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"raw numbers: {out}")


if __name__ == "__main__":
    main()
