# Helpers sourced by the Slurm and Ray entry points (not run on its own).
# Reads: PROG (the caller's name for messages), HOSTNAMES (node names, whitespace-separated;
# overrides the Slurm node list), SLURM_JOB_NODELIST, GPUS_PER_NODE, SLURM_GPUS_ON_NODE,
# SLURM_GPUS_PER_NODE, PY, RAY_AUTH_MODE, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH.
# shellcheck shell=bash

die() {
  echo "${PROG:-${0##*/}}: $*" >&2
  exit 2
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Print a command as one shell-quoted line.
show_cmd() {
  printf '%q ' "$@"
  echo
}

# Wait for a background process even when trapped signals interrupt `wait`; returns its status.
wait_pid() {
  while kill -0 "$1" 2>/dev/null; do
    wait "$1" || true
  done
  wait "$1"
}

# The Python of the repo's venv (or PY, or python3), as an absolute command.
pick_python() {
  local repo=$1
  if [ -z "${PY:-}" ]; then
    PY=python3
    [ -x "$repo/.venv/bin/python" ] && PY=$repo/.venv/bin/python
  fi
  command -v "$PY" >/dev/null || die "PY=$PY: not an executable Python"
}

# Expand a Slurm node list without scontrol: comma-separated names, each with at most one
# trailing bracket group of numbers and ranges (node[01-03,07],gpu5). One name per line.
expand_nodelist() {
  local list=$1 item="" depth=0 ch i items=() prefix part lo hi n
  for ((i = 0; i < ${#list}; i++)); do
    ch=${list:i:1}
    case $ch in
      "[") depth=1 ;;
      "]") depth=0 ;;
    esac
    if [ "$ch" = "," ] && [ "$depth" = 0 ]; then
      items+=("$item")
      item=""
    else
      item+=$ch
    fi
  done
  items+=("$item")
  for item in "${items[@]}"; do
    if [[ $item =~ ^([^][,]+)\[([0-9,-]+)\]$ ]]; then
      prefix=${BASH_REMATCH[1]}
      IFS=, read -ra parts <<<"${BASH_REMATCH[2]}"
      for part in "${parts[@]}"; do
        [[ $part =~ ^([0-9]+)(-([0-9]+))?$ ]] || die "cannot parse the node list '$list'; set HOSTNAMES"
        lo=${BASH_REMATCH[1]}
        hi=${BASH_REMATCH[3]:-$lo}
        for ((n = 10#$lo; n <= 10#$hi; n++)); do
          printf '%s%0*d\n' "$prefix" "${#lo}" "$n"
        done
      done
    elif [[ $item =~ ^[^][,]+$ ]]; then
      echo "$item"
    else
      die "cannot parse the node list '$list' (only name[1-4,7]-style lists); set HOSTNAMES"
    fi
  done
}

# The allocation's node names, one per line: HOSTNAMES, else scontrol, else expand_nodelist.
slurm_hosts() {
  if [ -n "${HOSTNAMES:-}" ]; then
    # shellcheck disable=SC2086  # split the list on whitespace
    printf '%s\n' $HOSTNAMES
  elif [ -z "${SLURM_JOB_NODELIST:-}" ]; then
    die "SLURM_JOB_NODELIST is not set: run inside a Slurm allocation (sbatch), or set HOSTNAMES"
  elif command -v scontrol >/dev/null; then
    scontrol show hostnames "$SLURM_JOB_NODELIST"
  else
    expand_nodelist "$SLURM_JOB_NODELIST"
  fi
}

# GPUs per node: GPUS_PER_NODE, else Slurm's count for this node, else the per-node request
# (`4`, `a100:4`, `gpu:a100:4(S:0-1)`), else 1 (a CPU-only allocation: one process per node).
gpus_per_node() {
  local n=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-}}
  if [ -z "$n" ] && [ -n "${SLURM_GPUS_PER_NODE:-}" ]; then
    n=${SLURM_GPUS_PER_NODE%%(*}
    n=${n##*:}
  fi
  n=${n:-1}
  is_uint "$n" && [ "$n" -ge 1 ] || die "cannot read a GPU count from '$n'; set GPUS_PER_NODE"
  echo "$n"
}

# Ray token authentication for every process of the job (heads, workers, drivers): on by
# default; the token comes from RAY_AUTH_TOKEN or the token file, which is created (mode 600)
# when missing. The file must be readable on every node (a shared home, or RAY_AUTH_TOKEN_PATH).
ray_auth_setup() {
  export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
  [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] || return 0
  local file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
  [ -s "$file" ] && return 0
  mkdir -p "$(dirname "$file")"
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file")
}
