"""`identity-crisis report`: run folders and sweep cells in, figures, summary.md and report.json
out. Most tests write plausible run folders directly (fast); one reads a real `fit` run."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from matplotlib.text import Text
from PIL import Image

from identity_crisis.cli import main
from identity_crisis.report import (
    GRID_PAD,
    GRID_SCALE,
    HIDDEN_GAP,
    HIDDEN_STRIP,
    RunRecord,
    follow_note,
    group_configurations,
    load_local,
    plots,
    swept_keys,
)
from identity_crisis.run_folder import flatten_config
from identity_crisis.verdict import VERDICT_COLOURS

SETS = ("mnist", "fashion", "mnist_pairs", "patterns", "gaussian_noise")
PROBES = 14
CELL = 28 * GRID_SCALE
INIT_COLOUR, TRAINED_COLOUR = (10, 20, 200), (20, 200, 10)


def score(depth: int, seed: int, test_set: str, name: str) -> float:
    """A distinct, known value per run and score, so means can be checked exactly."""
    offset = SETS.index(test_set) / 100
    if name == "identity_corr":
        return 1.0 - 0.2 * depth + 0.03 * seed - offset
    if name == "constant_corr":
        return 0.1 * depth + 0.02 * seed + offset
    if name == "frac_identity":
        return 1.0 / (depth + seed)
    return 0.5 * depth / 10


def output_level(depth: int, seed: int) -> float:
    """Every output pixel of the fake run: tells the grid's rows apart."""
    return 0.2 * depth + 0.05 * seed


def lightning_config(
    depth: int, seed: int, run_dir: Path, channels: int = 4, model_args: dict | None = None
) -> dict:
    """A config.yaml as LightningCLI writes it (nested, init_args), trimmed."""
    return {
        "seed_everything": seed,
        "trainer": {"max_steps": 20, "default_root_dir": None, "logger": None},
        "model": {
            "class_path": "lightning_modules.CNN",
            "init_args": {
                "depth": depth,
                "channels": channels,
                "kernel_size": 5,
                "activation": "relu",
                "fit_threshold": 0.001,
                **(model_args or {}),
            },
        },
        # The data root differs between runs (bookkeeping): it must not become a swept key.
        "data": {
            "root": f"/data/{seed}",
            "train_dataset": "mnist",
            "test_sets": list(SETS),
            "test_size": 4,
        },
        "run": {"dir": str(run_dir), "name": None, "group": "tiny"},
        "ckpt_path": None,
    }


def write_run(
    run_dir: Path, depth: int, seed: int, fitted: bool = True, layers: dict | None = None, **config
) -> None:
    run_dir.mkdir(parents=True)
    metrics = {
        f"test/{s}/{name}": score(depth, seed, s, name)
        for s in SETS
        for name in ("identity_corr", "constant_corr", "frac_identity", "frac_constant")
    }
    loss = 1e-5 * depth if fitted else 0.05
    (run_dir / "metrics.json").write_text(
        json.dumps(
            {
                "status": "ok",
                "fitted": fitted,
                "train/final_loss": loss,
                "train/steps": 20,
                "model/params": 100 * depth,
                "model/weights": 90 * depth,
                "data/train_indices": [15],
                "metrics": metrics,
                **({"layers": layers} if layers is not None else {}),
            }
        )
    )
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(lightning_config(depth, seed, run_dir, **config))
    )
    rng = np.random.default_rng(depth * 10 + seed)
    np.savez_compressed(
        run_dir / "probe_predictions.npz",
        names=np.array([f"probe{i}" for i in range(PROBES)]),
        inputs=rng.random((PROBES, 1, 28, 28), dtype=np.float32),
        outputs=np.full((PROBES, 1, 28, 28), output_level(depth, seed), np.float32),
        identity_corr=rng.random(PROBES),
        constant_corr=rng.random(PROBES),
        verdict=np.zeros(PROBES, np.int64),
        flat=np.zeros(PROBES, bool),
    )
    # Hidden panels: one row per layer plus input and output, like the real ones.
    size = (60, 10 * (depth + 2))
    Image.new("RGB", size, INIT_COLOUR).save(run_dir / "hidden_init.png")
    Image.new("RGB", size, TRAINED_COLOUR).save(run_dir / "hidden_trained.png")


def write_cell(sweep: Path, params: dict, failed: bool = False, **kwargs) -> Path:
    """A sweep cell as the offline runner leaves it: log.txt, then done.json and run/, or
    failed.json alone."""
    cell = sweep / "-".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())
    cell.mkdir(parents=True)
    (cell / "log.txt").write_text("$ python identity_crisis/cli.py fit --model.depth=...\n")
    if failed:
        (cell / "failed.json").write_text(
            json.dumps(
                {
                    "params": params,
                    "returncode": 1,
                    "reason": "exit code 1, run status None",
                    "log": str(cell / "log.txt"),
                }
            )
        )
    else:
        write_run(cell / "run", params["model.depth"], params["seed_everything"], **kwargs)
        (cell / "done.json").write_text(json.dumps({"params": params, "run": "run"}))
    return cell


@pytest.fixture
def depth_sweep(tmp_path) -> SimpleNamespace:
    """Depths 3, 1, 2 (written out of order) x seeds 0-2, except: depth 1 seed 2 did not fit,
    depth 2 seed 2 failed (a failed cell, no run), depth 3 seed 2 never ran (missing)."""
    sweep = tmp_path / "sweeps" / "tiny"
    cells = {}
    for depth in (3, 1, 2):
        for seed in (0, 1, 2):
            if (depth, seed) == (3, 2):
                continue
            params = {"model.depth": depth, "model.channels": 4, "seed_everything": seed}
            cells[depth, seed] = write_cell(
                sweep, params, failed=(depth, seed) == (2, 2), fitted=(depth, seed) != (1, 2)
            )
    return SimpleNamespace(root=tmp_path / "sweeps", cells=cells, out=tmp_path / "report")


def run_report(capsys, *args, api=None) -> tuple[int, str, str]:
    from identity_crisis import report

    try:
        report.main([str(a) for a in args], api=api)
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def pixel(image: np.ndarray, row: int, column: int) -> int:
    """The centre pixel of a grid cell (columns after the divider, counted from the right edge,
    so the label margin's width does not matter)."""
    y = GRID_PAD + row * (CELL + GRID_PAD) + CELL // 2
    x = image.shape[1] - (PROBES - column) * (CELL + GRID_PAD) + CELL // 2
    return int(image[y, x, 0])


def load_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_depth_sweep_report(capsys, depth_sweep):
    code, out, err = run_report(capsys, depth_sweep.root, "--out", depth_sweep.out)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == f"report: {depth_sweep.out.resolve()}/summary.md"
    report = json.loads((depth_sweep.out / "report.json").read_text())
    assert report["keys"] == ["model.depth"]  # not data.root or run.dir, which differ too
    assert report["seed"] == 0
    configs = report["configurations"]
    assert [c["label"] for c in configs] == ["depth 1", "depth 2", "depth 3"]

    # Means over the fitted seeds 0 and 1 only: depth 1's unfitted seed 2 is left out.
    for config, depth in zip(configs, (1, 2, 3), strict=True):
        assert config["used"] == 2 and config["seeds"] == [0, 1]
        for s in SETS:
            for name in ("identity_corr", "constant_corr", "frac_identity"):
                expected = np.mean([score(depth, seed, s, name) for seed in (0, 1)])
                assert config["mean"][f"test/{s}/{name}"] == pytest.approx(expected)
        assert config["min"]["test/mnist/identity_corr"] == pytest.approx(
            score(depth, 0, "mnist", "identity_corr")
        )
    by_label = {c["label"]: c for c in configs}
    assert (by_label["depth 1"]["fitted"], by_label["depth 1"]["runs"]) == (2, 3)
    assert by_label["depth 1"]["final_loss_max"] == pytest.approx(0.05)  # the unfitted seed's
    assert (by_label["depth 2"]["fitted"], by_label["depth 2"]["runs"]) == (2, 3)
    assert by_label["depth 2"]["all_seeds"] == [0, 1, 2]  # the failed cell's seed
    assert by_label["depth 3"]["all_seeds"] == [0, 1]
    assert by_label["depth 1"]["mean"]["test/all/frac_identity"] == pytest.approx(
        np.mean([score(1, seed, s, "frac_identity") for seed in (0, 1) for s in SETS])
    )

    # The grid: an input row and one row per depth, ordered by depth, seed 0's outputs.
    grid = load_png(depth_sweep.out / "prediction_grid.png")
    assert grid.shape[0] == GRID_PAD + 4 * (CELL + GRID_PAD)
    margin = grid.shape[1] - (GRID_PAD + PROBES * (CELL + GRID_PAD) + 2 * GRID_SCALE + GRID_PAD)
    assert 0 < margin < 250  # the row labels
    for row, depth in enumerate((1, 2, 3), start=1):
        for column in (0, 5, 13):
            assert pixel(grid, row, column) == round(255 * output_level(depth, 0))
    # The input row: the probe inputs of the first row's run.
    inputs = np.load(depth_sweep.cells[1, 0] / "run" / "probe_predictions.npz")["inputs"]
    assert pixel(grid, 0, 5) == round(255 * float(inputs[5, 0, 14, 14]))
    red = (grid[..., 0] > 200) & (grid[..., 1] < 60)
    assert red.any(axis=0).sum() == 2 * GRID_SCALE  # the divider after the training image

    # Hidden maps: the smallest and largest depth, initial | trained with a label strip.
    for depth in (1, 3):
        hidden = load_png(depth_sweep.out / f"hidden_depth-{depth}.png")
        assert hidden.shape == (HIDDEN_STRIP + 10 * (depth + 2), 2 * 60 + HIDDEN_GAP, 3)
        assert tuple(hidden[-1, 0]) == INIT_COLOUR and tuple(hidden[-1, -1]) == TRAINED_COLOUR
    assert not (depth_sweep.out / "hidden_depth-2.png").exists()
    for name in ("curves_depth", "verdicts_depth", "curves_params"):
        for suffix in (".png", ".svg"):
            assert (depth_sweep.out / f"{name}{suffix}").stat().st_size > 1000
    # Five test sets: the main curves show four, readable at a glance; the fifth is in _by_set.
    height, width = load_png(depth_sweep.out / "curves_depth.png").shape[:2]
    assert 1000 <= width <= 1600 and 800 <= height <= 1200
    assert (depth_sweep.out / "curves_depth_by_set.png").is_file()

    # Every problem is named, in summary.md and on the console, never dropped silently.
    summary = (depth_sweep.out / "summary.md").read_text()
    failed_cell = depth_sweep.cells[2, 2]
    unfitted = depth_sweep.cells[1, 2] / "run"
    kinds = {(p["kind"], p["configuration"], p["seed"]) for p in report["problems"]}
    assert kinds == {
        ("broken sweep cell", "depth 2", 2),
        ("not fitted", "depth 1", 2),
        ("missing seeds", "depth 3", None),
    }
    for text in (summary, out):
        assert str(failed_cell) in text and str(failed_cell / "log.txt") in text
        assert "exit code 1" in text
        assert str(unfitted.resolve()) in text and "excluded from the means" in text
        assert "no run for seed(s) 2" in text
    assert "| 1 | 0, 1 | 2/3 |" in summary


def test_seed_option_draws_that_seeds_outputs(capsys, depth_sweep):
    code, _, err = run_report(capsys, depth_sweep.root, "--out", depth_sweep.out, "--seed", 1)
    assert code == 0, err
    grid = load_png(depth_sweep.out / "prediction_grid.png")
    for row, depth in enumerate((1, 2, 3), start=1):
        assert pixel(grid, row, 7) == round(255 * output_level(depth, 1))


def test_hidden_option_and_include_unfitted(capsys, depth_sweep):
    code, _, err = run_report(capsys, depth_sweep.root, "--out", depth_sweep.out)
    assert code == 0, err
    notes = depth_sweep.out / "notes.txt"  # the user's own file beside the report
    notes.write_text("keep me")
    args = [depth_sweep.root, "--out", depth_sweep.out, "--hidden", "2", "--include-unfitted"]
    code, _, err = run_report(capsys, *args)
    assert code == 2 and "already holds a report" in err and "--replace" in err  # never silently
    code, _, err = run_report(capsys, *args, "--replace")
    assert code == 0, err
    # The last report's hidden maps (depths 1 and 3) are gone; nothing else was touched.
    assert [p.name for p in depth_sweep.out.glob("hidden_*.png")] == ["hidden_depth-2.png"]
    assert notes.read_text() == "keep me"
    report = json.loads((depth_sweep.out / "report.json").read_text())
    depth1 = report["configurations"][0]
    assert depth1["used"] == 3
    expected = np.mean([score(1, seed, "mnist", "identity_corr") for seed in (0, 1, 2)])
    assert depth1["mean"]["test/mnist/identity_corr"] == pytest.approx(expected)


def test_two_swept_keys_make_heatmaps(capsys, tmp_path):
    sweep = tmp_path / "grid"
    for depth in (2, 1):
        for channels in (8, 4):
            params = {"model.depth": depth, "model.channels": channels, "seed_everything": 0}
            write_cell(sweep, params, channels=channels)
    out = tmp_path / "report"
    code, _, err = run_report(capsys, sweep, "--out", out)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["keys"] == ["model.depth", "model.channels"]
    assert [c["label"] for c in report["configurations"]] == ["d1 c4", "d1 c8", "d2 c4", "d2 c8"]
    for name in ("curves_depth", "verdicts_depth", "curves_params"):
        assert (out / f"{name}.png").is_file()
    # Shares of nets with k/n per cell, never mean scores (tests/test_report_stats.py).
    for verdict in ("constant", "identity"):
        for suffix in (".png", ".svg"):
            assert (out / f"heatmap_depth_channels_{verdict}{suffix}").is_file()

    # --key orders by the keys given (a bare name resolves to its dotted key); checked on the
    # records directly, as drawing the figures again would only cost time.
    records = load_local([str(sweep)])
    keys, also, follow = swept_keys(records, ["channels"])
    assert (keys, also, follow) == (["model.channels", "model.depth"], ["model.depth"], [])
    labels = [c.label for c in group_configurations(records, keys)]
    assert labels == ["c4 d1", "c4 d2", "c8 d1", "c8 d2"]


def budget_records(max_steps: dict[int, list[int]]) -> list[RunRecord]:
    """Runs of depths 1 and 3 at seeds 0 and 1, with the given trainer.max_steps per depth."""
    return [
        RunRecord(
            source=f"d{depth}-s{seed}",
            config={"model.depth": depth, "trainer.max_steps": steps, "seed_everything": seed},
            status="ok",
        )
        for depth, per_seed in max_steps.items()
        for seed, steps in enumerate(per_seed)
    ]


def test_a_key_with_one_value_per_asked_row_is_a_note_not_a_row_key():
    # A budget raised for depth 1 only: --key depth keeps one row per depth and names the budget.
    records = budget_records({1: [12000, 12000], 3: [5000, 5000]})
    assert swept_keys(records, []) == (["model.depth", "trainer.max_steps"], [], [])
    keys, also, follow = swept_keys(records, ["depth"])
    assert (keys, also, follow) == (["model.depth"], [], ["trainer.max_steps"])
    configs = group_configurations(records, keys)
    assert [len(c.runs) for c in configs] == [2, 2]
    assert follow_note("trainer.max_steps", configs) == (
        "trainer.max_steps (one value per row): 12000 for depth 1; 5000 for depth 3"
    )
    # Two budgets within one depth would merge different runs: the key stays a row key.
    records = budget_records({1: [12000, 5000], 3: [5000, 5000]})
    assert swept_keys(records, ["depth"]) == (
        ["model.depth", "trainer.max_steps"],
        ["trainer.max_steps"],
        [],
    )


# --- W&B: a fake public API with the runs of the same sweep ------------------------------------
class FakeFile:
    def __init__(self, name: str, source: Path):
        self.name, self.source = name, source

    def download(self, root: str, replace: bool = False):
        target = Path(root) / self.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.source, target)


class FakeRun:
    def __init__(self, run_id, config, summary, state, files=()):
        self.id, self.name, self.state = run_id, f"run-{run_id}", state
        self.config, self.summary, self._files = config, summary, list(files)

    def files(self):
        return self._files


class FakeApi:
    def __init__(self, sweeps: dict):
        self.sweeps = sweeps

    def sweep(self, path: str):
        if path not in self.sweeps:
            raise ValueError(f"Could not find sweep {path}")
        return SimpleNamespace(runs=self.sweeps[path])


def wandb_runs(depth_sweep) -> list[FakeRun]:
    """The sweep's runs as W&B holds them: the dotted config the CLI logs, the metrics in the
    summary, the probe predictions and panels as files; the failed cell as a crashed run."""
    runs = []
    for (depth, seed), cell in sorted(depth_sweep.cells.items()):
        run_dir = cell / "run"
        run_id = f"d{depth}s{seed}"
        if not run_dir.is_dir():
            config = flatten_config(lightning_config(depth, seed, run_dir))
            summary = {"status": "crashed", "error": "RuntimeError: out of memory"}
            runs.append(FakeRun(run_id, config, summary, "crashed"))
            continue
        metrics = json.loads((run_dir / "metrics.json").read_text())
        config = flatten_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
        config["model/params"] = metrics["model/params"]  # logged as a hyperparameter
        summary = {
            **metrics["metrics"],
            "train/final_loss": metrics["train/final_loss"],
            "train/fitted": float(metrics["fitted"]),
            "model/params": metrics["model/params"],
            "_runtime": 12.5,
        }
        files = [
            FakeFile("probe_predictions.npz", run_dir / "probe_predictions.npz"),
            FakeFile("media/images/panels/hidden_init_20_ab12.png", run_dir / "hidden_init.png"),
            FakeFile(
                "media/images/panels/hidden_trained_20_cd34.png", run_dir / "hidden_trained.png"
            ),
            FakeFile("output.log", run_dir / "metrics.json"),
        ]
        runs.append(FakeRun(run_id, config, summary, "finished", files))
    return runs


def test_wandb_sweep_gives_the_same_report_as_the_local_folders(capsys, depth_sweep, tmp_path):
    code, _, err = run_report(capsys, depth_sweep.root, "--out", depth_sweep.out)
    assert code == 0, err
    local = json.loads((depth_sweep.out / "report.json").read_text())

    api = FakeApi({"ent/proj/sw1": wandb_runs(depth_sweep)})
    out = tmp_path / "wandb-report"
    code, printed, err = run_report(capsys, "--wandb-sweep", "ent/proj/sw1", "--out", out, api=api)
    assert code == 0, err
    remote = json.loads((out / "report.json").read_text())
    for key in ("keys", "seed", "seeds", "configurations"):
        assert remote[key] == local[key], key
    assert {(p["kind"], p["configuration"], p["seed"]) for p in remote["problems"]} == {
        ("crashed", "depth 2", 2),
        ("not fitted", "depth 1", 2),
        ("missing seeds", "depth 3", None),
    }
    assert "ent/proj/d2s2 (run-d2s2)" in printed and "out of memory" in printed
    assert np.array_equal(
        load_png(out / "prediction_grid.png"), load_png(depth_sweep.out / "prediction_grid.png")
    )
    assert (
        load_png(out / "hidden_depth-3.png").shape
        == load_png(depth_sweep.out / "hidden_depth-3.png").shape
    )
    # The figures went to a new (offline) W&B run of job type "report".
    (offline_run,) = (out / "wandb").glob("offline-run-*")
    images = list((offline_run / "files" / "media" / "images").rglob("*.png"))
    assert any(p.name.startswith("prediction_grid") for p in images)


# --- a real run folder ---------------------------------------------------------------------------
def test_reads_a_real_fit_run_folder(capsys, data_root, tmp_path):
    run_dir = tmp_path / "runs" / "real"
    main(
        [
            "fit",
            "--config",
            "configs/cnn.yaml",
            "--model.depth=2",
            "--model.channels=4",
            "--trainer.max_steps=10",
            "--data.test_size=4",
            f"--data.root={data_root}",
            "--data.download=false",
            f"--run.dir={run_dir}",
        ]
    )
    capsys.readouterr()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = tmp_path / "report"
    code, printed, err = run_report(capsys, tmp_path / "runs", "--out", out, "--include-unfitted")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["keys"] == [] and report["seed"] == 0
    (config,) = report["configurations"]
    assert config["label"] == "CNN d2"
    assert config["params"] == metrics["model/params"] == 25 * 4 + 4 + 25 * 4 + 1
    assert config["final_loss_max"] == pytest.approx(metrics["train/final_loss"])
    for key, value in metrics["metrics"].items():
        assert config["mean"][key] == pytest.approx(value)
    grid = load_png(out / "prediction_grid.png")
    assert grid.shape[0] == GRID_PAD + 2 * (CELL + GRID_PAD)
    predictions = np.load(run_dir / "probe_predictions.npz")
    expected = np.clip(predictions["outputs"][5, 0, 14, 14], 0, 1)
    assert pixel(grid, 1, 5) == round(255 * float(expected))
    hidden = load_png(out / "hidden_CNN-d2.png")
    trained = load_png(run_dir / "hidden_trained.png")
    initial = load_png(run_dir / "hidden_init.png")  # narrower: no live-unit notes at init
    width = initial.shape[1] + trained.shape[1] + HIDDEN_GAP
    assert hidden.shape == (HIDDEN_STRIP + trained.shape[0], width, 3)
    assert (out / "curves_params.png").is_file()
    if not metrics["fitted"]:
        assert "not fitted" in printed and str(run_dir) in printed


# --- bad arguments --------------------------------------------------------------------------------
BAD_ARGUMENTS = [
    (["--key", "model.deph"], "'model.deph'"),
    (["--seed", "7"], "--seed 7"),
    (["--hidden", "9"], "--hidden 9"),
    (["--hidden", "x"], "--hidden=x is not valid"),
    (["--hidden", "7,14"], "as a list, e.g. [7,14,20]"),
    (["--key", "a,b"], "--key [a,b]"),
]


@pytest.mark.parametrize("args, needle", BAD_ARGUMENTS, ids=lambda a: str(a))
def test_bad_arguments_exit_2_naming_the_value(capsys, depth_sweep, args, needle):
    code, out, err = run_report(capsys, depth_sweep.root, "--out", depth_sweep.out, *args)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert not (depth_sweep.out / "summary.md").exists()


def test_no_runs_or_a_missing_path_exit_2(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_report(capsys, empty, "--out", tmp_path / "report")
    assert code == 2 and "no runs found" in err and str(empty) in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_report(capsys, tmp_path / "nowhere")
    assert code == 2 and "nowhere" in err
    code, _, err = run_report(capsys, "--wandb-sweep", "just-an-id", api=FakeApi({}))
    assert code == 2 and "'just-an-id'" in err
    code, _, err = run_report(capsys, "--wandb-sweep", "e/p/nope", api=FakeApi({}))
    assert code == 2 and "e/p/nope" in err


def test_the_layer_that_lost_the_input_is_named_per_seed_and_mixed_mechanisms_noted(tmp_path):
    """Issue 16: a constant forced by a dead layer and one reached with the input carried deep
    must not average together silently."""
    runs = tmp_path / "runs"
    for seed, lost in ((0, 2), (1, 2), (2, None)):
        layers = {"live_share": [1.0, 0.0], "input_share": [0.5, 0.0], "first_blind_layer": lost}
        write_run(runs / f"d20-s{seed}", depth=20, seed=seed, layers=layers)
    for seed in (0, 1, 2):  # measured before live units existed: unknown, not "carried"
        write_run(runs / f"d3-s{seed}", depth=3, seed=seed)
    out = tmp_path / "report"
    main(["report", str(runs), "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    columns, rows = report["table"]["columns"], report["table"]["data"]
    lost = {row[0]: row[columns.index("input lost at layer")] for row in rows}
    assert lost == {"3": "?", "20": "2, 2, -"}
    (note,) = [n for n in report["notes"] if "mix two mechanisms" in n]
    assert "2 of 3 runs lose the input at a hidden layer (2)" in note


# --- the curves figure ----------------------------------------------------------------------------
ALL_SETS = ("mnist", "fashion", "mnist_pairs", "patterns", "gaussian_noise", "checkerboard")


def curve_value(test_set: str, depth: int, kernel: int, name: str) -> float:
    base = 0.9 - 0.1 * depth - 0.01 * kernel - ALL_SETS.index(test_set) / 50
    return base if name == "identity_corr" else 1 - base


def curve_numbers(sets=ALL_SETS, kernels=(3, 9)) -> list[dict]:
    """report.json's configuration numbers, one per (depth, kernel), with known means."""
    numbers = []
    for kernel in kernels:
        for depth in (1, 3, 5):
            mean = {
                f"test/{s}/{name}": curve_value(s, depth, kernel, name)
                for s in sets
                for name in ("identity_corr", "constant_corr")
            }
            numbers.append(
                {
                    "values": {"model.depth": depth, "model.kernel_size": kernel},
                    "mean": mean,
                    "min": {k: v - 0.05 for k, v in mean.items()},
                    "max": {k: v + 0.05 for k, v in mean.items()},
                    "params": depth * kernel * 100,
                }
            )
    return numbers


def draw_curves(numbers: list[dict], rest: list[str]):
    axis = plots.XAxis([n["values"]["model.depth"] for n in numbers], "model.depth")
    fig = plots.curves_figure(
        numbers, axis, lambda n: n["values"]["model.depth"], rest, "scores against model.depth"
    )
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    return fig, panels


def test_main_curves_are_four_large_panels_of_the_key_sets_with_readable_text():
    fig, panels = draw_curves(curve_numbers(), ["model.kernel_size"])
    assert [ax.get_title() for ax in panels] == [
        "MNIST",
        "Fashion-MNIST",
        "patterns",
        "Gaussian noise",
    ]
    width, height = fig.get_size_inches() * 110  # save_figure's dpi
    assert width <= 1600 and height <= 1200
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text() and t.get_visible()]
    assert min(sizes) >= 10
    # Each panel: per kernel size, identity_corr solid and constant_corr dashed, at the means.
    fashion = panels[1]
    lines = {line.get_label(): line for line in fashion.get_lines() if line.get_label()[0] != "_"}
    assert set(lines) == {
        f"kernel_size {k} {score}" for k in (3, 9) for score in ("identity_corr", "constant_corr")
    }
    for k in (3, 9):
        for score, style in (("identity_corr", "-"), ("constant_corr", "--")):
            line = lines[f"kernel_size {k} {score}"]
            assert line.get_linestyle() == style
            expected = [curve_value("fashion", d, k, score) for d in (1, 3, 5)]
            np.testing.assert_allclose(line.get_ydata(), expected)
            np.testing.assert_array_equal(line.get_xdata(), [1, 3, 5])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == [
        "identity_corr: output vs its own input",
        "constant_corr: output vs the training image",
    ]
    assert set(legend[2:]) == {"kernel_size 3", "kernel_size 9"}


def test_main_curves_with_one_key_colour_the_scores_green_and_red():
    numbers = [n for n in curve_numbers() if n["values"]["model.kernel_size"] == 3]
    for n in numbers:
        n["values"].pop("model.kernel_size")
    _, panels = draw_curves(numbers, [])
    colours = {
        line.get_label(): line.get_color()
        for line in panels[0].get_lines()
        if not line.get_label().startswith("_")  # the zero line
    }
    assert colours == {
        "all identity_corr": VERDICT_COLOURS["identity"],
        "all constant_corr": VERDICT_COLOURS["constant"],
    }


def test_three_sets_get_three_panels_and_the_detail_figure_only_when_sets_are_left_out(
    monkeypatch, tmp_path
):
    three = ("mnist", "fashion", "mnist_pairs")
    _, panels = draw_curves(curve_numbers(sets=three), ["model.kernel_size"])
    assert [ax.get_title() for ax in panels] == [
        "MNIST",
        "Fashion-MNIST",
        "MNIST pairs (two digits averaged)",
    ]
    drawn = []

    def save_figure(fig, out, name):
        drawn.append(name)
        return [out / f"{name}.png"]

    monkeypatch.setattr(plots, "save_figure", save_figure)
    key = ["model.depth", "model.kernel_size"]
    for sets, expected in ((ALL_SETS, True), (plots.KEY_SETS, False)):
        drawn.clear()
        plots.plot_figures(curve_numbers(sets=sets), key, tmp_path)
        assert ("curves_depth_by_set" in drawn) is expected
        assert ("curves_params_by_set" in drawn) is expected
        assert "curves_depth" in drawn and "curves_params" in drawn


# --- the input share at init beside the trained runs ---------------------------------------------
def test_init_share_draws_each_runs_net_again_as_init_signal_measures_it(
    capsys, data_root, tmp_path, monkeypatch
):
    from identity_crisis import init_signal
    from identity_crisis.report.init_shares import mnist_digits

    monkeypatch.setenv("IDC_DATA_DIR", str(data_root))
    sweep = tmp_path / "sweeps" / "gains"
    for gain in (1.0, 3.0):
        for seed in (0, 1):
            params = {"model.init_gain": gain, "seed_everything": seed}
            write_cell(
                sweep,
                {**params, "model.depth": 3, "model.channels": 4},
                model_args={"init_gain": gain},
            )
    out = tmp_path / "report"
    code, _, err = run_report(capsys, tmp_path / "sweeps", "--out", out, "--init-share", "[1,2]")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["transitions"]["key"] == "model.init_gain"
    assert (
        "init_share_init_gain.png" in report["files"]
        and (out / "init_share_init_gain.png").exists()
    )
    digits = mnist_digits([], 20)
    for row in report["init_share"]:
        gain, expected = row["values"]["model.init_gain"], {}
        for seed in row["seeds"]:
            (measured,) = init_signal.measure(
                ["xavier_uniform"], [3], digits, channels=4, seed=seed, gains=[gain]
            )
            for layer in (1, 2):
                expected.setdefault(layer, []).append(measured["input_share"][layer - 1])
        assert row["seeds"] == [0, 1]
        for layer, values in expected.items():
            assert row["input_share"][str(layer)]["mean"] == pytest.approx(np.mean(values))
            assert row["input_share"][str(layer)]["max"] == pytest.approx(max(values))


def test_init_share_of_a_layer_a_net_lacks_is_refused_before_anything_is_written(
    capsys, depth_sweep
):
    code, _, err = run_report(
        capsys, depth_sweep.root, "--out", depth_sweep.out, "--init-share", "2"
    )
    assert code == 2
    assert "--init-share" in err and "no layer 2" in err and "give layers 1-" in err
    assert not depth_sweep.out.exists()


# --- figures drawn again from report.json ---------------------------------------------------------
def test_redraw_draws_the_figures_from_report_json_alone_and_drops_ones_no_longer_drawn(
    capsys, depth_sweep
):
    import shutil

    code, _, err = run_report(capsys, depth_sweep.root, "--out", depth_sweep.out)
    assert code == 0, err
    out = depth_sweep.out
    report = json.loads((out / "report.json").read_text())
    # An older report's figure this version no longer draws (a heatmap of means), and a file of
    # the user's that no report listed.
    (out / "heatmap_depth_seed_constant_corr.png").write_bytes(b"old")
    (out / "mine.png").write_bytes(b"mine")
    report["files"].append("heatmap_depth_seed_constant_corr.png")
    (out / "report.json").write_text(json.dumps(report))
    (out / "curves_depth.png").unlink()
    shutil.rmtree(depth_sweep.root)  # no runs at hand
    code, printed, err = run_report(capsys, "--redraw", out)
    assert code == 0, err
    assert "curves_depth.png" in printed and load_png(out / "curves_depth.png").shape[0] > 100
    assert not (out / "heatmap_depth_seed_constant_corr.png").exists()
    assert (out / "mine.png").read_bytes() == b"mine"
    files = json.loads((out / "report.json").read_text())["files"]
    assert "heatmap_depth_seed_constant_corr.png" not in files and "prediction_grid.png" in files
    code, _, err = run_report(capsys, "--redraw", out, depth_sweep.root)
    assert code == 2 and "--redraw" in err


def test_points_that_count_an_unfitted_net_are_open_rings_and_the_title_says_so(
    capsys, depth_sweep
):
    from identity_crisis.report import plots

    args = [depth_sweep.root, "--out", depth_sweep.out, "--include-unfitted"]
    code, _, err = run_report(capsys, *args)
    assert code == 0, err
    numbers = json.loads((depth_sweep.out / "report.json").read_text())["configurations"]
    assert [plots.not_fitted(n) for n in numbers] == [True, False, False]  # depth 1, seed 2
    assert "open rings: not fitted" in plots.seeds_note(numbers)
    axis = plots.XAxis([n["values"]["model.depth"] for n in numbers], "model.depth")
    fig = plots.curves_figure(numbers, axis, lambda n: axis.x(n["values"]["model.depth"]), [], "t")
    rings = [
        line for ax in fig.axes for line in ax.get_lines() if line.get_markerfacecolor() == "white"
    ]
    assert rings and all(list(line.get_xdata()) == [1] for line in rings)
    assert "open rings" not in plots.seeds_note([n for n in numbers if not plots.not_fitted(n)])


def test_a_mechanism_note_only_where_some_seeds_keep_the_input_and_some_lose_it():
    from identity_crisis.report.grouping import mechanism_note

    assert mechanism_note({"label": "d20", "input_lost_at": [2, 3, 5]}) is None
    assert mechanism_note({"label": "d16", "input_lost_at": [None, None]}) is None
    note = mechanism_note({"label": "d12", "input_lost_at": [3, None]})
    assert note.startswith("d12: 1 of 2 runs lose the input at a hidden layer (3)")
