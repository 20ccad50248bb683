#!/usr/bin/env bash
# Run W&B sweep agents on this machine: AGENTS_PER_GPU agents per visible GPU, each pinned to its
# GPU with CUDA_VISIBLE_DEVICES (one CPU agent when there is no GPU).
#
#   wandb sweep sweeps/fig3_cnn_depth.yaml        # prints the sweep id: entity/project/abc123
#   sweeps/agents.sh entity/project/abc123 [AGENTS_PER_GPU]
#
# Our nets are small (one image per step), so one agent rarely fills a GPU: 2-4 per GPU is usual.
# GPUs: $CUDA_VISIBLE_DEVICES if set (a comma list), else every index nvidia-smi lists.
# Environment:
#   AGENT_COUNT=N        each agent stops after N runs (wandb agent --count); default: until the
#                        sweep is done
#   AGENT_STAGGER_S=S    seconds between agent starts (default 5), so agents do not all ask the
#                        controller at once or race to extract the data
#   AGENT_THREADS=T      OMP_NUM_THREADS of each agent's runs (default 2; the CPU agent gets
#                        every core unless this is set)
#   AGENT_LOG_DIR=DIR    where logs go (default logs/): DIR/agent-<gpu>-<k>.log, gpu = cpu for
#                        the CPU agent
#   AGENT_DRY_RUN=1      print the commands, start nothing
# Stopping: SIGINT (Ctrl-C) or SIGTERM to this script is passed on to every agent as SIGINT, which
# is wandb agent's own Ctrl-C: the first one lets each agent's current run finish and starts no
# new run (no sweep cell is lost half-done); a second one makes the agents terminate their runs
# (recorded as interrupted). The script waits for every agent and exits with the worst exit code.
set -euo pipefail

usage() {
    echo "usage: $0 SWEEP_ID [AGENTS_PER_GPU]" >&2
    echo "  SWEEP_ID: what 'wandb sweep sweeps/<file>.yaml' printed (entity/project/id or id)" >&2
    echo "  env: AGENT_COUNT, AGENT_STAGGER_S, AGENT_THREADS, AGENT_LOG_DIR, AGENT_DRY_RUN=1" >&2
}

if [[ $# -lt 1 || $# -gt 2 || -z "$1" || "$1" == -h || "$1" == --help ]]; then
    usage
    exit 2
fi
sweep_id=$1
per_gpu=${2:-1}
if ! [[ "$per_gpu" =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: AGENTS_PER_GPU must be a positive integer, got '$per_gpu'" >&2
    exit 2
fi
count=${AGENT_COUNT:-}
if [[ -n "$count" ]] && ! [[ "$count" =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: AGENT_COUNT must be a positive integer, got '$count'" >&2
    exit 2
fi
stagger=${AGENT_STAGGER_S:-5}
if ! [[ "$stagger" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "$0: AGENT_STAGGER_S must be a number of seconds, got '$stagger'" >&2
    exit 2
fi
dry_run=${AGENT_DRY_RUN:-0}
# WANDB_MODE is passed on as it is; offline or disabled cannot work with an agent.
case "${WANDB_MODE:-}" in
    offline | disabled | dryrun)
        echo "$0: WANDB_MODE=$WANDB_MODE, but a W&B agent needs the W&B server;" \
            "without one use: identity-crisis sweep sweeps/<file>.yaml" >&2
        if [[ "$dry_run" != 1 ]]; then
            exit 2
        fi
        ;;
esac

# The sweep command is `python identity_crisis/cli.py fit --config configs/...`: relative paths,
# so the agents run from the repository root, with its virtual environment's python first on PATH
# (wandb agent runs plain `python`).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [[ -z "${VIRTUAL_ENV:-}" && -x .venv/bin/python ]]; then
    export VIRTUAL_ENV="$repo/.venv"
    export PATH="$VIRTUAL_ENV/bin:$PATH"
fi
log_dir=${AGENT_LOG_DIR:-logs}

# GPU list: CUDA_VISIBLE_DEVICES wins (it may hold UUIDs or MIG ids: they are used as given).
gpus=()
if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    IFS=',' read -r -a gpus <<<"${CUDA_VISIBLE_DEVICES// /}"
elif command -v nvidia-smi >/dev/null 2>&1; then
    mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null |
        tr -d ' ' || true)
fi
# CUDA_VISIBLE_DEVICES="" or "-1" means no GPU.
if [[ ${#gpus[@]} -eq 0 || "${gpus[0]}" == "" || "${gpus[0]}" == "-1" ]]; then
    gpus=()
fi

agent_cmd=(wandb agent)
if [[ -n "$count" ]]; then
    agent_cmd+=(--count "$count")
fi
agent_cmd+=("$sweep_id")

# slots: "<gpu> <k>" per agent; gpu "cpu" = no GPU.
slots=()
if [[ ${#gpus[@]} -eq 0 ]]; then
    slots=("cpu 0")
    threads=${AGENT_THREADS:-$(nproc 2>/dev/null || echo 1)}
    echo "no GPU visible: one CPU agent" >&2
else
    for gpu in "${gpus[@]}"; do
        for ((k = 0; k < per_gpu; k++)); do
            slots+=("$gpu $k")
        done
    done
    threads=${AGENT_THREADS:-2}
fi

pids=()
stopping=0
# shellcheck disable=SC2317  # called from the traps below
stop() {
    stopping=$((stopping + 1))
    if ((stopping == 1)); then
        echo "agents.sh: got SIG$1: agents finish their current runs and stop" \
            "(send it again to terminate the runs)" >&2
    else
        echo "agents.sh: got SIG$1 again: agents terminate their runs" >&2
    fi
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill -INT "$pid" 2>/dev/null || true
    done
}

if [[ "$dry_run" != 1 ]]; then
    mkdir -p "$log_dir"
    trap 'stop INT' INT
    trap 'stop TERM' TERM
fi

n=0
for slot in "${slots[@]}"; do
    read -r gpu k <<<"$slot"
    log="$log_dir/agent-$gpu-$k.log"
    if [[ "$gpu" == cpu ]]; then
        env_vars=(CUDA_VISIBLE_DEVICES= "OMP_NUM_THREADS=$threads")
    else
        env_vars=("CUDA_VISIBLE_DEVICES=$gpu" "OMP_NUM_THREADS=$threads")
    fi
    if [[ "$dry_run" == 1 ]]; then
        printf '%q ' env "${env_vars[@]}" "${agent_cmd[@]}"
        printf '> %q 2>&1\n' "$log"
        continue
    fi
    if ((n > 0)); then
        sleep "$stagger" || true
    fi
    # A signal during the stagger sleep: start nothing more.
    if ((stopping > 0)); then
        break
    fi
    # Job control on for the launch only: the agent gets its own process group, so a Ctrl-C in
    # the terminal reaches this script alone (which passes it on once), and SIGINT is not
    # ignored in the agent, as it would be for a background command of a plain script.
    set -m
    env "${env_vars[@]}" "${agent_cmd[@]}" >"$log" 2>&1 &
    pids+=("$!")
    set +m
    echo "agent $n: GPU $gpu (#$k), pid $!, log $log" >&2
    n=$((n + 1))
done

if [[ "$dry_run" == 1 ]]; then
    exit 0
fi

# wait returns early (status > 128) when a trapped signal arrives: keep waiting on each agent
# until it has really exited, then keep the worst exit code.
worst=0
for pid in ${pids[@]+"${pids[@]}"}; do
    while true; do
        rc=0
        wait "$pid" || rc=$?
        if ((rc > 128)) && kill -0 "$pid" 2>/dev/null; then
            continue
        fi
        break
    done
    if ((rc > worst)); then
        worst=$rc
    fi
done
echo "agents.sh: all agents done (worst exit code $worst)" >&2
exit "$worst"
