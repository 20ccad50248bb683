#!/usr/bin/env bash
# GPU check: does the project train on a GPU, how fast, and do sweeps pack several cells per GPU?
# On a machine with one GPU it runs in under 8 minutes and ends with one summary table.
#
#   IDC_DATA_DIR=/path/to/data scripts/gpu_check.sh     # results under ./gpu_check_out
#   OUT=/somewhere/new scripts/gpu_check.sh             # results under $OUT
#   scripts/gpu_check.sh --dry-run                      # or GPU_CHECK_DRY=1: parse, train nothing
#
# Steps, each timed and under its own `timeout`:
#   device  torch sees a GPU (the check stops here if it does not)
#   fit     identity-crisis fit --config configs/cnn.yaml on cuda (depth 5): MNIST identity corr
#   bench   benchmarks/bench_speed.py --quick --device cuda: ms per training step at depth 5
#   sweep   sweeps/repro_fig3.yaml (10 depths) at reduced steps, 4 cells at once on GPU 0
# The summary (step, status, exit code, seconds, result) is printed and written to
# $OUT/gpu_check_summary.md; each step's output goes to $OUT/logs/<step>.log.
#
# --dry-run parses every command as the real run would, without training: fit with
# --print_config, the benchmark and the sweep with their own --dry-run (the sweep's parses every
# cell). Without a GPU, the sweep is parsed with --gpus none (the ids go unchecked).
#
# Environment:
#   OUT                  results folder (default ./gpu_check_out); must not hold an earlier check
#   IDC_DATA_DIR         data root with MNIST/raw and FashionMNIST/raw (default ./data)
#   PYTHON               the interpreter (default .venv/bin/python if there, else python3)
#   WANDB_MODE           default offline; `wandb sync` the runs later
#   GPU_CHECK_STEPS      the steps to run, e.g. "fit sweep" (default: all)
#   GPU_CHECK_SWEEP_STEPS  training steps of each sweep cell (default 200)
#   GPU_CHECK_{FIT,BENCH,SWEEP}_ARGS     extra arguments appended to that step's command
#   GPU_CHECK_{FIT,BENCH,SWEEP}_TIMEOUT  that step's limit in seconds (120, 190, 140)
#   GPU_CHECK_BUDGET_S   limit of the whole check (default 450): a step gets at most what is
#                        left, less 10 s for `timeout` to kill it
# Exit code: 0 every step passed; 1 a step failed or timed out; 2 a bad command line or an OUT
# that holds an earlier check.
set -uo pipefail

dry="${GPU_CHECK_DRY:-0}"
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry=1 ;;
        -h | --help)
            sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "gpu_check.sh: unknown argument '$arg' (see --help)" >&2
            exit 2
            ;;
    esac
done
[[ "$dry" == 0 ]] || dry=1

OUT="$(realpath -m -- "${OUT:-./gpu_check_out}")"
cd "$(dirname "$0")/.." || exit 2
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
export WANDB_MODE="${WANDB_MODE:-offline}"
steps="${GPU_CHECK_STEPS:-device fit bench sweep}"
sweep_steps="${GPU_CHECK_SWEEP_STEPS:-200}"
budget="${GPU_CHECK_BUDGET_S:-450}"
start="$(date +%s)"

if [[ "$dry" == 1 ]]; then
    logs="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-dry.XXXXXX")"
    trap 'rm -rf "$logs"' EXIT
else
    for earlier in gpu_check_summary.md runs sweeps bench_cuda.json logs; do
        if [[ -e "$OUT/$earlier" ]]; then
            echo "gpu_check.sh: $OUT already holds an earlier check ($earlier); move it away" \
                "or set OUT to a new folder" >&2
            exit 2
        fi
    done
    logs="$OUT/logs"
    mkdir -p "$logs" || exit 2
fi

rows=()   # step|status|rc|seconds|result
failed=0

# run_step NAME CAP_SECONDS COMMAND...: runs it under `timeout`, its output in $logs/NAME.log.
run_step() {
    local name="$1" cap="$2" limit left begin rc seconds
    shift 2
    left=$((budget - ($(date +%s) - start) - 10))
    limit=$((cap < left ? cap : left))
    if ((limit < 5)); then
        step_rc=124 step_seconds=0
        echo "[$name] no time left in the ${budget} s budget: skipped" | tee "$logs/$name.log"
        return
    fi
    local shown=() word
    for word in "$@"; do
        [[ "$word" == *$'\n'* ]] && word="'<inline python>'"
        shown+=("$word")
    done
    echo "[$name] (limit ${limit} s) ${shown[*]}" | tee "$logs/$name.log"
    begin="$(date +%s.%N)"
    timeout -k 10 "$limit" "$@" >>"$logs/$name.log" 2>&1
    rc=$?
    seconds="$(awk -v a="$begin" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    step_rc=$rc step_seconds=$seconds
    if ((rc != 0)); then
        echo "[$name] exit code $rc after ${seconds} s; the end of its output:" >&2
        tail -n 25 "$logs/$name.log" | sed "/^\[$name\] /!s/^/[$name] /" >&2
    fi
}

# record NAME RESULT [OK]: a summary row from the last run_step; OK=0 fails a step that exited 0
# without the result it should have left. A dry step that failed shows its error instead.
record() {
    local name="$1" result="$2" ok="${3:-1}" status=ok
    if ((step_rc == 124 || step_rc == 137)); then
        status=TIMEOUT
    elif ((step_rc != 0 || ok != 1)); then
        status=FAIL
    fi
    if [[ "$dry" == 1 && "$status" != ok ]]; then
        result="$(tail -n +2 "$logs/$name.log" | grep -i 'error' | tail -n 1)"
        result="${result:-$(tail -n 1 "$logs/$name.log")}"
        result="${result:0:240}"
    fi
    [[ "$status" == ok ]] || failed=1
    rows+=("$name|$status|$step_rc|$step_seconds|${result//|/\/}")
}

wants() { [[ " $steps " == *" $1 "* ]]; }

# Extra arguments from the environment, split into words as a shell would split them unquoted.
read -ra fit_extra <<<"${GPU_CHECK_FIT_ARGS:-}"
read -ra bench_extra <<<"${GPU_CHECK_BENCH_ARGS:-}"
read -ra sweep_extra <<<"${GPU_CHECK_SWEEP_ARGS:-}"

gpus=0
if wants device; then
    run_step device 60 "$PYTHON" -c '
import sys, torch
count = torch.cuda.device_count()
name = torch.cuda.get_device_name(0) if count else "no GPU"
print(f"gpus={count} {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
sys.exit(0 if count or sys.argv[1] == "1" else 1)
' "$dry"
    found="$(grep -o 'gpus=[0-9]*.*' "$logs/device.log" | tail -n 1)"
    gpus="$(sed -n 's/^gpus=\([0-9]*\).*/\1/p' <<<"$found")"
    gpus="${gpus:-0}"
    record device "${found#gpus=* }"
    if [[ "$dry" == 0 && "$gpus" == 0 ]]; then
        steps=""   # nothing else can pass without a GPU
        echo "gpu_check.sh: torch sees no GPU; nothing else is run" >&2
    fi
fi

if wants fit; then
    command=("$PYTHON" identity_crisis/cli.py fit --config configs/cnn.yaml)
    command+=(--trainer.accelerator=gpu --trainer.devices=1 --run.root "$OUT/runs")
    command+=("${fit_extra[@]}")
    [[ "$dry" == 1 ]] && command+=(--print_config)
    run_step fit "${GPU_CHECK_FIT_TIMEOUT:-120}" "${command[@]}"
    if [[ "$dry" == 1 ]]; then
        record fit "command line parses (--print_config)"
    else
        result="$("$PYTHON" - "$logs/fit.log" "$OUT/runs" <<'EOF'
import json, re, sys
from pathlib import Path
# The run folder is the last line `fit` prints; else the only run under --run.root.
folders = re.findall(r"^run folder: (.+)$", Path(sys.argv[1]).read_text(), re.MULTILINE)
found = [Path(folders[-1].strip()) / "metrics.json"] if folders else []
found = found or sorted(Path(sys.argv[2]).glob("*/*/metrics.json"))
if not found or not found[-1].is_file():
    print("no metrics.json")
    sys.exit(1)
metrics = found[-1]
m = json.loads(metrics.read_text())
corr = m.get("metrics", {}).get("test/mnist/identity_corr")
fitted = "fitted" if m.get("fitted") else "NOT fitted"
corr = "none" if corr is None else f"{corr:.3f}"
print(f"MNIST identity corr {corr}, {m.get('train/steps')} steps, {fitted}, {m.get('status')}")
sys.exit(0 if m.get("status") == "ok" else 1)
EOF
)"
        ok=$?
        record fit "$result" "$((ok == 0))"
    fi
fi

if wants bench; then
    command=(benchmarks/bench_speed.py --quick --device cuda --out "$OUT/bench_cuda.json")
    command+=("${bench_extra[@]}")
    if [[ "$dry" == 1 ]]; then
        run_step bench "${GPU_CHECK_BENCH_TIMEOUT:-190}" "$PYTHON" "${command[@]}" --dry-run
        record bench "command line parses (--dry-run)"
    else
        run_step bench "${GPU_CHECK_BENCH_TIMEOUT:-190}" "$PYTHON" "${command[@]}"
        result="$("$PYTHON" - "$OUT/bench_cuda.json" <<'EOF'
import json, sys
from pathlib import Path
path = Path(sys.argv[1])
if not path.is_file():
    print("no bench_cuda.json (CUDA unavailable to the benchmark?)")
    sys.exit(1)
report = json.loads(path.read_text())
rows = {r.get("model"): r for r in report.get("framework_overhead", [])}
d5 = rows.get("cnn-d5-c128", {})
try:
    ms = d5["lightning_step_s"]["median"] * 1e3
    plain = d5["plain_step_s"]["median"] * 1e3
    print(f"CNN depth 5: {ms:.2f} ms/step under Lightning, {plain:.2f} plain PyTorch")
except (KeyError, TypeError):
    print(f"bench_cuda.json has no depth-5 step time (sections: {', '.join(report)})")
    sys.exit(1)
EOF
)"
        ok=$?
        record bench "$result" "$((ok == 0))"
    fi
fi

if wants sweep; then
    gpu_ids=0
    note=""
    if [[ "$dry" == 1 && "$gpus" == 0 ]]; then
        gpu_ids=none   # the runner refuses ids it cannot see; the rest is parsed all the same
        note=" (no GPU here: parsed with --gpus none)"
    fi
    command=("$PYTHON" identity_crisis/cli.py sweep sweeps/repro_fig3.yaml)
    command+=(--gpus "$gpu_ids" --per-gpu 4 --out "$OUT/sweeps" --trainer.accelerator=gpu)
    command+=("--trainer.min_steps=$sweep_steps" "--trainer.max_steps=$sweep_steps")
    command+=("${sweep_extra[@]}")
    [[ "$dry" == 1 ]] && command+=(--dry-run)
    run_step sweep "${GPU_CHECK_SWEEP_TIMEOUT:-140}" "${command[@]}"
    if [[ "$dry" == 1 ]]; then
        cells="$(grep -Eo '^[0-9]+ cells: .*' "$logs/sweep.log" | tail -n 1)"
        record sweep "${cells:-no cell list}$note"
    else
        cells="$("$PYTHON" -c 'import sys; from identity_crisis.sweep_file import expand, load_sweep
print(len(expand(load_sweep(sys.argv[1]))))' sweeps/repro_fig3.yaml)"
        done_cells="$(find "$OUT/sweeps" -mindepth 3 -maxdepth 3 -name done.json | wc -l)"
        failed_cells="$(find "$OUT/sweeps" -mindepth 3 -maxdepth 3 -name failed.json | wc -l)"
        result="$cells cells at $sweep_steps steps, 4 per GPU: $done_cells done, $failed_cells failed"
        record sweep "$result" "$((done_cells == cells))"
    fi
fi

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
summary="## GPU check$( ((dry)) && echo ' (dry run)'), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, $(($(date +%s) - start)) s

| step | status | rc | seconds | result |
|---|---|---|---|---|"
for row in "${rows[@]}"; do
    IFS='|' read -r name status rc seconds result <<<"$row"
    summary+=$'\n'"| $name | $status | $rc | $seconds | $result |"
done
echo
echo "$summary"
if [[ "$dry" == 0 ]]; then
    echo "$summary" >"$OUT/gpu_check_summary.md"
    echo
    echo "written to $OUT/gpu_check_summary.md; logs in $logs/"
fi
exit "$failed"
