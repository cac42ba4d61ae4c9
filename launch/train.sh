#!/usr/bin/env bash
# Run `python -m pipeline.train` in the mode the environment asks for:
#   (nothing set)                        one process
#   NPROC=N                              N processes on this node (deepspeed launcher)
#   HOSTFILE=path [NPROC=N]              deepspeed launcher over the hosts of a hostfile
#                                        (`host slots=N` lines; NPROC caps the processes per host)
#   NNODES=N NODE_RANK=i MASTER_ADDR=host [MASTER_PORT=29500] [NPROC=N]
#                                        torchrun, node i of N; run it once on every node
# Also read: CONFIG (a YAML run config), PY (the Python; default .venv/bin/python, else python3),
# DS_LAUNCHER (the deepspeed launcher's multi-node backend: pdsh, openmpi, slurm, ...),
# TORCH_ELASTIC_SHUTDOWN_TIMEOUT (seconds torchrun grants its workers after SIGTERM to checkpoint;
# default 300), DRY_RUN=1 (print the command instead of running it).
# Arguments: `--dry-run` (first only, same as DRY_RUN=1), then OmegaConf dotlist overrides.
# CONFIG and HOSTFILE may be relative to the caller's directory; the trainer runs in the repo
# root, so relative paths inside overrides are relative to the repo root.
set -euo pipefail

die() { echo "launch/train.sh: $*" >&2; exit 2; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

if [ "${1:-}" = "--dry-run" ]; then
  DRY_RUN=1
  shift
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

NPROC=${NPROC:-1}
NNODES=${NNODES:-1}
is_uint "$NPROC" && [ "$NPROC" -ge 1 ] ||
  die "NPROC=$NPROC: expected a positive integer (processes on this node)"
is_uint "$NNODES" && [ "$NNODES" -ge 1 ] ||
  die "NNODES=$NNODES: expected a positive integer (number of nodes)"

if [ -n "${CONFIG:-}" ]; then
  [ -f "$CONFIG" ] || die "CONFIG=$CONFIG: no such file"
  CONFIG=$(realpath "$CONFIG")
fi
if [ -n "${HOSTFILE:-}" ]; then
  [ -f "$HOSTFILE" ] && [ -r "$HOSTFILE" ] || die "HOSTFILE=$HOSTFILE: no such readable file"
  [ "$NNODES" -eq 1 ] || die "HOSTFILE and NNODES=$NNODES are two ways to go multi-node; set one of them"
  grep -Eq '^[[:space:]]*[^#[:space:]]' "$HOSTFILE" || die "HOSTFILE=$HOSTFILE lists no hosts"
  HOSTFILE=$(realpath "$HOSTFILE")
fi
if [ "$NNODES" -gt 1 ]; then
  [ -n "${NODE_RANK:-}" ] || die "NNODES=$NNODES needs NODE_RANK (this node's index, 0..$((NNODES - 1)))"
  is_uint "$NODE_RANK" && [ "$NODE_RANK" -lt "$NNODES" ] ||
    die "NODE_RANK=$NODE_RANK: expected an integer in 0..$((NNODES - 1))"
  [ -n "${MASTER_ADDR:-}" ] ||
    die "NNODES=$NNODES needs MASTER_ADDR (the host of node 0, reachable from every node)"
elif [ -n "${NODE_RANK:-}" ] && [ "$NODE_RANK" != 0 ]; then
  die "NODE_RANK=$NODE_RANK without NNODES>1; set NNODES to the number of nodes"
fi
if [ -n "${MASTER_PORT:-}" ]; then
  is_uint "$MASTER_PORT" && [ "$MASTER_PORT" -ge 1 ] && [ "$MASTER_PORT" -le 65535 ] ||
    die "MASTER_PORT=$MASTER_PORT: expected a port number 1..65535"
fi

if [ -z "${PY:-}" ]; then
  PY=python3
  [ -x "$repo/.venv/bin/python" ] && PY=$repo/.venv/bin/python
fi
command -v "$PY" >/dev/null || die "PY=$PY: not an executable Python"

args=()
[ -n "${CONFIG:-}" ] && args+=(--config "$CONFIG")
args+=("$@")

if [ -n "${HOSTFILE:-}" ]; then
  cmd=("$PY" -m deepspeed.launcher.runner --hostfile "$HOSTFILE")
  [ "$NPROC" -gt 1 ] && cmd+=(--num_gpus "$NPROC")
  [ -n "${MASTER_ADDR:-}" ] && cmd+=(--master_addr "$MASTER_ADDR")
  [ -n "${MASTER_PORT:-}" ] && cmd+=(--master_port "$MASTER_PORT")
  [ -n "${DS_LAUNCHER:-}" ] && cmd+=(--launcher "$DS_LAUNCHER")
  cmd+=(--module pipeline.train "${args[@]}")
elif [ "$NNODES" -gt 1 ]; then
  cmd=("$PY" -m torch.distributed.run --nnodes "$NNODES" --node-rank "$NODE_RANK"
       --nproc-per-node "$NPROC" --master-addr "$MASTER_ADDR" --master-port "${MASTER_PORT:-29500}"
       -m pipeline.train "${args[@]}")
elif [ "$NPROC" -gt 1 ]; then
  cmd=("$PY" -m deepspeed.launcher.runner --num_gpus "$NPROC")
  [ -n "${MASTER_PORT:-}" ] && cmd+=(--master_port "$MASTER_PORT")
  cmd+=(--module pipeline.train "${args[@]}")
else
  cmd=("$PY" -m pipeline.train "${args[@]}")
fi

if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
cd "$repo"
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-300}
exec "${cmd[@]}"
