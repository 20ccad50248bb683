"""`identity-crisis report` on bad run folders: each malformed file makes its run broken, named
with the file and what is wrong, and the report is built from the other runs, never a traceback.
Also a sweep in which no run fitted, which the report says plainly."""

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from identity_crisis.report import plots
from tests.test_report import run_report, write_cell, write_run

GOOD_DEPTHS = (1, 2)
# The bad run is the deepest (so the hidden-map figure would draw it) and of seed 0 (so the
# prediction grid would draw it).
BAD_DEPTH = 3


def write_text(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def write_bytes(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def edit_metrics(**changes):
    def edit(folder: Path) -> None:
        metrics = json.loads((folder / "metrics.json").read_text())
        for key, value in changes.items():
            key = key.replace("__", "/")
            if value is None:
                metrics.pop(key)
            else:
                metrics[key] = value
        (folder / "metrics.json").write_text(json.dumps(metrics))

    return edit


def score_literal(literal: str):
    """metrics.json with test/mnist/identity_corr written as a bare JSON-like literal."""

    def edit(folder: Path) -> None:
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["metrics"]["test/mnist/identity_corr"] = "@literal@"
        text = json.dumps(metrics).replace('"@literal@"', literal)
        (folder / "metrics.json").write_text(text)

    return edit


def edit_config(edit_tree):
    def edit(folder: Path) -> None:
        tree = yaml.safe_load((folder / "config.yaml").read_text())
        edit_tree(tree)
        (folder / "config.yaml").write_text(yaml.safe_dump(tree))

    return edit


def truncate(name: str):
    def edit(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])

    return edit


def corrupt_npz_member(folder: Path) -> None:
    """Flip bytes inside the compressed outputs array: the zip directory still reads."""
    path = folder / "probe_predictions.npz"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("outputs.npy")
    data = bytearray(path.read_bytes())
    offset = info.header_offset  # the local header: its name and extra lengths at 26 and 28
    start = offset + 30 + int.from_bytes(data[offset + 26 : offset + 28], "little")
    start += int.from_bytes(data[offset + 28 : offset + 30], "little") + 10
    data[start : start + 40] = bytes(40)
    path.write_bytes(bytes(data))


def drop_outputs(folder: Path) -> None:
    path = folder / "probe_predictions.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "outputs"}
    np.savez_compressed(path, **arrays)


def set_in(path: list[str], value):
    def edit(tree: dict) -> None:
        for key in path[:-1]:
            tree = tree[key]
        tree[path[-1]] = value

    return edit


# (id, file, how the file is made bad, words of the reason). Each bad file is in a run folder
# of its own beside good ones.
RUN_FOLDER_CASES = [
    ("config-binary", "config.yaml", write_bytes("config.yaml", b"\x89\xff\x00\x01"), "not text"),
    ("config-not-yaml", "config.yaml", write_text("config.yaml", "a: [1, 2\nb: {"), "not valid"),
    ("config-list", "config.yaml", write_text("config.yaml", "- 1\n- 2\n"), "not a mapping"),
    ("config-string", "config.yaml", write_text("config.yaml", "a string\n"), "not a mapping"),
    ("config-empty", "config.yaml", write_text("config.yaml", ""), "empty"),
    (
        "config-init-args-list",
        "config.yaml",
        edit_config(set_in(["model", "init_args"], [1, 2])),
        "model.init_args",
    ),
    (
        "config-seed-list",
        "config.yaml",
        edit_config(set_in(["seed_everything"], [0])),
        "seed_everything",
    ),
    ("metrics-list", "metrics.json", write_text("metrics.json", "[1, 2]"), "not a JSON object"),
    ("metrics-empty", "metrics.json", write_text("metrics.json", ""), "empty"),
    ("metrics-binary", "metrics.json", write_bytes("metrics.json", b"\xff\xfe\x00{"), "not text"),
    ("metrics-not-json", "metrics.json", write_text("metrics.json", '{"status": "ok",'), "JSON"),
    ("metrics-no-status", "metrics.json", edit_metrics(status=None), "no status"),
    ("metrics-metrics-list", "metrics.json", edit_metrics(metrics=[1, 2]), '"metrics"'),
    ("metrics-metrics-string", "metrics.json", edit_metrics(metrics="x"), '"metrics"'),
    (
        "metrics-score-string",
        "metrics.json",
        edit_metrics(metrics={"test/mnist/identity_corr": "high"}),
        "test/mnist/identity_corr",
    ),
    (
        # Runs write NaN as null (strict JSON); Python's json would read the literal.
        "metrics-score-nan",
        "metrics.json",
        score_literal("NaN"),
        "not a finite number",
    ),
    ("metrics-fitted-string", "metrics.json", edit_metrics(fitted="no"), '"fitted"'),
    ("metrics-fitted-list", "metrics.json", edit_metrics(fitted=[1]), '"fitted"'),
    ("metrics-loss-string", "metrics.json", edit_metrics(train__final_loss="big"), "final_loss"),
    ("metrics-loss-object", "metrics.json", edit_metrics(train__final_loss={}), "final_loss"),
    ("metrics-status-list", "metrics.json", edit_metrics(status=["ok"]), '"status"'),
    (
        "predictions-truncated",
        "probe_predictions.npz",
        truncate("probe_predictions.npz"),
        ".npz",
    ),
    (
        "predictions-garbage",
        "probe_predictions.npz",
        write_bytes("probe_predictions.npz", b"not an archive"),
        ".npz",
    ),
    ("predictions-corrupt", "probe_predictions.npz", corrupt_npz_member, "not a readable"),
    ("predictions-no-outputs", "probe_predictions.npz", drop_outputs, '"outputs"'),
    (
        "hidden-trained-corrupt",
        "hidden_trained.png",
        write_bytes("hidden_trained.png", b"\x89PNG\r\n\x1a\nxxxx"),
        "not a readable image",
    ),
    ("hidden-init-truncated", "hidden_init.png", truncate("hidden_init.png"), "image"),
]


@pytest.fixture
def unrendered_figures(monkeypatch):
    """Build every figure but do not render it: rendering is most of a report's time, test_report
    covers it, and a bad run folder never reaches it (its numbers are left out)."""

    def save_figure(fig, out: Path, name: str) -> list[Path]:
        plots.mark_empty_panels(fig)
        paths = [out / f"{name}.png", out / f"{name}.svg"]
        for path in paths:
            path.write_bytes(b"")
        return paths

    monkeypatch.setattr(plots, "save_figure", save_figure)


def make_good_runs(root: Path) -> None:
    for depth in GOOD_DEPTHS:
        write_run(root / f"good-d{depth}", depth, 0)


def check_report(capsys, root: Path, out: Path, bad: Path, file: str, words: str) -> dict:
    """Run the report; check it exited cleanly, named the bad run as broken with the file and
    the reason, and built the table from the good runs. Returns report.json."""
    code, printed, err = run_report(capsys, root, "--out", out)
    assert code == 0, err
    assert "Traceback" not in err
    report = json.loads((out / "report.json").read_text())
    (problem,) = [p for p in report["problems"] if p["source"] == str(bad.resolve())]
    assert problem["kind"].startswith("broken"), problem
    assert file in problem["detail"] and words in problem["detail"], problem["detail"]
    summary = (out / "summary.md").read_text()
    for text in (summary, printed):
        assert str(bad.resolve()) in text and file in text
    by_label = {c["label"]: c for c in report["configurations"]}
    for depth in GOOD_DEPTHS:
        good = by_label[f"depth {depth}"]
        assert (good["runs"], good["used"], good["fitted"]) == (1, 1, 1)
        assert good["mean"]["test/mnist/identity_corr"] == pytest.approx(1.0 - 0.2 * depth)
    table = {row[0]: row for row in report["table"]["data"]}
    for depth in GOOD_DEPTHS:
        assert table[str(depth)][1:3] == ["0", "1/1"]
    assert (out / "prediction_grid.png").is_file() and (out / "curves_depth.png").is_file()
    return report


@pytest.mark.parametrize(
    "file, make_bad, words", [c[1:] for c in RUN_FOLDER_CASES], ids=[c[0] for c in RUN_FOLDER_CASES]
)
def test_a_bad_run_folder_is_a_broken_run(
    capsys, tmp_path, file, make_bad, words, unrendered_figures
):
    root = tmp_path / "runs"
    make_good_runs(root)
    bad = root / "bad"
    write_run(bad, BAD_DEPTH, 0)
    make_bad(bad)
    report = check_report(capsys, root, tmp_path / "report", bad, file, words)
    if file.endswith((".npz", ".png")):
        # The figures skip the run and say why, in the notes.
        notes = [n for n in report["notes"] if str(bad.resolve()) in n]
        assert any(n.startswith("prediction grid: depth 3 left blank") for n in notes), notes
        assert any(n.startswith("no hidden maps for depth 3") for n in notes), notes
        assert all(file in n for n in notes)


def cell_case(files: dict[str, bytes], with_run: bool = True):
    """A sweep cell of depth 3, seed 0, then these files written over it (None: deleted)."""

    def make(sweep: Path) -> Path:
        params = {"model.depth": BAD_DEPTH, "seed_everything": 0}
        cell = write_cell(sweep, params, failed=not with_run)
        for name, data in files.items():
            if data is None:
                (cell / name).unlink()
            else:
                (cell / name).write_bytes(data)
        return cell

    return make


# (id, file, the cell, words of the reason, the record named: the cell or its run/).
CELL_CASES = [
    ("done-list", "done.json", cell_case({"done.json": b"[1, 2]"}), "not a JSON object", "run"),
    (
        "done-params-list",
        "done.json",
        cell_case({"done.json": b'{"params": [3, 0], "run": "run"}'}),
        '"params"',
        "run",
    ),
    (
        "failed-binary",
        "failed.json",
        cell_case({"failed.json": b"\x00\xff"}, with_run=False),
        "not text",
        "cell",
    ),
    (
        "log-bad-command",
        "log.txt",
        cell_case({"log.txt": b"$ fit --seed_everything=[0\n", "failed.json": None}, False),
        "seed_everything",
        "cell",
    ),
    (
        # A binary log is the run's own output: the cell has not ended yet, and says so.
        "log-binary",
        "log.txt",
        cell_case(
            {"log.txt": b"$ fit --model.depth=3\n\xff\xfe\x00\x81", "failed.json": None}, False
        ),
        "no result yet",
        "cell",
    ),
]


@pytest.mark.parametrize(
    "file, make_cell, words, named", [c[1:] for c in CELL_CASES], ids=[c[0] for c in CELL_CASES]
)
def test_a_bad_sweep_cell_is_broken(
    capsys, tmp_path, file, make_cell, words, named, unrendered_figures
):
    root = tmp_path / "runs"
    make_good_runs(root)
    cell = make_cell(root / "sweep")
    bad = cell / "run" if named == "run" else cell
    check_report(capsys, root, tmp_path / "report", bad, file, words)


def test_a_binary_log_after_the_command_is_only_output(capsys, tmp_path, unrendered_figures):
    root = tmp_path / "runs"
    make_good_runs(root)
    cell = write_cell(root / "sweep", {"model.depth": BAD_DEPTH, "seed_everything": 0})
    with (cell / "log.txt").open("ab") as log:
        log.write(b"\xff\xfe\x00 progress \x81\n")
    code, _, err = run_report(capsys, root, "--out", tmp_path / "report")
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["problems"] == []
    assert [c["used"] for c in report["configurations"]] == [1, 1, 1]


def unreadable(path: Path) -> bool:
    """Make a path unreadable; False when this user reads it anyway (root)."""
    path.chmod(0)
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            path.read_bytes()
    except PermissionError:
        return True
    path.chmod(0o755)
    return False


@pytest.mark.parametrize("what", ["folder", "metrics.json", "config.yaml", "log.txt"])
def test_an_unreadable_run_folder_or_file_is_broken(capsys, tmp_path, what, unrendered_figures):
    root = tmp_path / "runs"
    make_good_runs(root)
    if what == "log.txt":  # a cell that has not ended: only its log says what it runs
        bad = cell_case({"failed.json": None}, with_run=False)(root / "sweep")
    else:
        bad = root / "bad"
        write_run(bad, BAD_DEPTH, 0)
    target = bad if what == "folder" else bad / what
    if not unreadable(target):
        pytest.skip("this user reads a chmod 000 path anyway (root)")
    try:
        check_report(capsys, root, tmp_path / "report", bad, what, "cannot be read")
    finally:
        target.chmod(0o755)


def test_only_bad_runs_still_write_a_report(capsys, tmp_path, unrendered_figures):
    root = tmp_path / "runs"
    write_run(root / "bad", BAD_DEPTH, 0)
    (root / "bad" / "config.yaml").write_text("- not a mapping\n")
    out = tmp_path / "report"
    code, printed, err = run_report(capsys, root, "--out", out)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["configurations"] == [] and len(report["problems"]) == 1
    assert report["nothing_fitted"] == "no run fitted its image: 1 run, broken"
    assert "config.yaml: not a mapping" in (out / "summary.md").read_text()
    assert "config.yaml: not a mapping" in printed


def test_a_sweep_in_which_no_run_fitted_says_so(capsys, tmp_path):
    sweep = tmp_path / "grid"
    for depth in (1, 2):
        for channels in (4, 8):
            params = {"model.depth": depth, "model.channels": channels, "seed_everything": 0}
            write_cell(sweep, params, channels=channels, fitted=False)
    out = tmp_path / "report"
    code, printed, err = run_report(capsys, sweep, "--out", out)
    assert code == 0, err
    assert "Traceback" not in err
    line = "no run fitted its image: 4 runs, all not fitted"
    assert line in printed.splitlines()
    assert f"**{line}**" in (out / "summary.md").read_text().splitlines()
    report = json.loads((out / "report.json").read_text())
    assert report["keys"] == ["model.depth", "model.channels"]
    assert [c["used"] for c in report["configurations"]] == [0, 0, 0, 0]
    assert {p["kind"] for p in report["problems"]} == {"not fitted"}
    # Everything it can still draw: the unfitted outputs, the (empty) curves and heatmaps.
    for name in ("prediction_grid", "curves_depth", "verdicts_depth", "curves_params"):
        assert (out / f"{name}.png").is_file(), name
    for verdict in ("constant", "identity"):
        assert (out / f"heatmap_depth_channels_{verdict}.png").is_file()


def test_nothing_fitted_counts_each_outcome_and_goes_with_one_fitted_run(
    capsys, tmp_path, unrendered_figures
):
    root = tmp_path / "runs"
    for depth in (1, 2):
        write_run(root / f"d{depth}", depth, 0, fitted=False)
    (root / "crashed").mkdir()
    (root / "crashed" / "metrics.json").write_text('{"status": "crashed", "error": "boom"}')
    out = tmp_path / "report"
    code, printed, err = run_report(capsys, root, "--out", out)
    assert code == 0, err
    assert "no run fitted its image: 3 runs: 1 crashed, 2 not fitted" in printed.splitlines()
    write_run(root / "d3", 3, 0)
    code, printed, err = run_report(capsys, root, "--out", out, "--replace")
    assert code == 0, err
    assert "no run fitted" not in printed + (out / "summary.md").read_text()
    assert json.loads((out / "report.json").read_text())["nothing_fitted"] is None
