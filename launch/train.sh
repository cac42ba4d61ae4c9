#!/usr/bin/env bash
# Run the trainer in the mode the environment asks for:
#   (default)                one process
#   NPROC=N                  N processes on this node (deepspeed launcher)
#   HOSTFILE=path            multi-node through the deepspeed launcher
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   multi-node torchrun
# Arguments are OmegaConf dotlist overrides; CONFIG=path.yaml picks a config file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

args=("$@")
[ -n "${CONFIG:-}" ] && args=("--config" "$CONFIG" "${args[@]}")
NPROC=${NPROC:-1}
if [ -n "${HOSTFILE:-}" ]; then
  exec "$PY" -m deepspeed.launcher.runner --hostfile "$HOSTFILE" --module pipeline.train "${args[@]}"
elif [ -n "${NNODES:-}" ] && [ "${NNODES}" -gt 1 ]; then
  exec "$PY" -m torch.distributed.run --nnodes "$NNODES" --node-rank "${NODE_RANK:?NODE_RANK is required with NNODES}" \
    --nproc-per-node "$NPROC" --master-addr "${MASTER_ADDR:?MASTER_ADDR is required with NNODES}" \
    --master-port "${MASTER_PORT:-29500}" -m pipeline.train "${args[@]}"
elif [ "$NPROC" -gt 1 ]; then
  exec "$PY" -m deepspeed.launcher.runner --num_gpus "$NPROC" --module pipeline.train "${args[@]}"
else
  exec "$PY" -m pipeline.train "${args[@]}"
fi
