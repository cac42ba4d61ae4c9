#!/usr/bin/env bash
# A Ray cluster of several nodes on this machine: a head at 127.0.0.1:RAY_PORT and WORKERS worker
# nodes, each offering RAY_CPUS CPUs. It runs the given command with RAY_ADDRESS set and stops the
# cluster when the command ends; with no command it stays up until Ctrl-C. For trying the
# multi-node data path (launch/slurm/data.sbatch, a `ray up` cluster) on one machine. Ray's servers
# listen on every interface; token authentication (on by default, see below) keeps others out.
#   launch/ray/local_cluster.sh [--dry-run] [-- command ...]      (DRY_RUN=1 = --dry-run)
#   launch/ray/local_cluster.sh -- .venv/bin/python -m data_prep data.output=data/ray-test
# Reads: RAY_PORT (default 6379), WORKERS (default 1), RAY_CPUS (default 1), RAY_WAIT_S
# (default 120), RAY_TMPDIR (where Ray keeps its session files), RAY_AUTH_MODE,
# RAY_AUTH_TOKEN_PATH (as in launch/slurm/data.sbatch), PY.
set -euo pipefail
PROG=local_cluster.sh
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../common.sh
source "$repo/launch/common.sh"

dry_run=${DRY_RUN:-0}
if [ "${1:-}" = "--dry-run" ]; then
  dry_run=1
  shift
fi
unset DRY_RUN
if [ $# -gt 0 ]; then
  [ "$1" = "--" ] || die "usage: $PROG [--dry-run] [-- command ...]"
  shift
fi
port=${RAY_PORT:-6379}
workers=${WORKERS:-1}
cpus=${RAY_CPUS:-1}
is_uint "$port" && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "RAY_PORT=$port: expected a port number"
is_uint "$workers" || die "WORKERS=$workers: expected a number of worker nodes"
is_uint "$cpus" && [ "$cpus" -ge 1 ] || die "RAY_CPUS=$cpus: expected a positive CPU count"
pick_python "$repo"
ray_bin=$(dirname "$(command -v "$PY")")/ray
[ -x "$ray_bin" ] || ray_bin=ray
address=127.0.0.1:$port

head_cmd=("$ray_bin" start --head --port="$port" --num-cpus="$cpus"
          --include-dashboard=false --disable-usage-stats --block)
worker_cmd=("$ray_bin" start --address="$address" --num-cpus="$cpus"
            --disable-usage-stats --block)
wait_cmd=("$PY" "$repo/launch/ray/wait_for_nodes.py" "$address" --timeout "${RAY_WAIT_S:-120}")
if [ "$dry_run" = 1 ]; then
  show_cmd "${head_cmd[@]}"
  show_cmd "${wait_cmd[@]}" 1
  for ((i = 0; i < workers; i++)); do
    show_cmd "${worker_cmd[@]}"
  done
  show_cmd "${wait_cmd[@]}" $((workers + 1))
  [ $# -eq 0 ] || show_cmd env RAY_ADDRESS="$address" "$@"
  exit 0
fi

ray_auth_setup
nodes=()
stop_cluster() {
  [ "${#nodes[@]}" -eq 0 ] && return 0
  kill -TERM "${nodes[@]}" 2>/dev/null || true
  for pid in "${nodes[@]}"; do
    wait_pid "$pid" || true
  done
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${head_cmd[@]}" &
nodes+=($!)
"${wait_cmd[@]}" 1 --while-alive "${nodes[@]}" >/dev/null
for ((i = 0; i < workers; i++)); do
  "${worker_cmd[@]}" &
  nodes+=($!)
done
"${wait_cmd[@]}" $((workers + 1)) --while-alive "${nodes[@]}"
if [ $# -eq 0 ]; then
  echo "$PROG: cluster up; RAY_ADDRESS=$address; Ctrl-C stops it"
  wait_pid "${nodes[0]}"
else
  RAY_ADDRESS=$address "$@"
fi
