"""Shared pieces of the launch/ tests: script paths, free ports, stand-ins for Slurm's commands."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline_helpers import ENV, ROOT
from rank_processes import free_port  # noqa: F401  (the launch tests import it from here)

LAUNCH = ROOT / "launch"
TRAIN_SH = LAUNCH / "train.sh"
TRAIN_SBATCH = LAUNCH / "slurm" / "train.sbatch"
DATA_SBATCH = LAUNCH / "slurm" / "data.sbatch"
LOCAL_CLUSTER = LAUNCH / "ray" / "local_cluster.sh"
SHELL_SCRIPTS = [TRAIN_SH, LAUNCH / "common.sh", TRAIN_SBATCH, DATA_SBATCH, LOCAL_CLUSTER]
# every distributed process of the tests talks over the loopback interface
LOOPBACK_ENV = {**ENV, "PY": sys.executable, "GLOO_SOCKET_IFNAME": "lo"}

# srun stand-in: runs the command once per requested node, all on this machine, with
# SLURM_NODEID set (with --exclude, node 0 is the one left out), and forwards SIGTERM.
FAKE_SRUN = r"""#!/usr/bin/env bash
set -uo pipefail
nodes=$SLURM_JOB_NUM_NODES
first=0
while [ $# -gt 0 ]; do
  case $1 in
    --nodes=*) nodes=${1#--nodes=} ;;
    --exclude=*) first=1 ;;
    -*) ;;
    *) break ;;
  esac
  shift
done
echo "srun nodes=$nodes first=$first $1" >>"$FAKE_SLURM_LOG"
pids=()
for ((i = first; i < first + nodes; i++)); do
  SLURM_NODEID=$i SLURM_PROCID=$i "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
  wait "$pid" || status=$?
done
exit "$status"
"""

# scontrol stand-in: `show hostnames` prints FAKE_HOSTNAMES; every call is logged.
FAKE_SCONTROL = r"""#!/usr/bin/env bash
echo "scontrol $*" >>"$FAKE_SLURM_LOG"
if [ "$1 $2" = "show hostnames" ]; then
  printf '%s\n' $FAKE_HOSTNAMES
fi
"""


def fake_slurm(tmp: Path, nodes: int, job_id: int = 4242, base: dict | None = None, **extra: str) -> dict:
    """`base` (default LOOPBACK_ENV) made to look like a batch job of `nodes` nodes on 127.0.0.1,
    with srun and scontrol stand-ins first on PATH; their calls are logged to tmp/slurm.log."""
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    base = LOOPBACK_ENV if base is None else base
    return {**base, "PATH": f"{bin_dir}:{base['PATH']}", "FAKE_SLURM_LOG": str(tmp / "slurm.log"),
            "FAKE_HOSTNAMES": " ".join(["127.0.0.1"] * nodes), "SLURM_JOB_ID": str(job_id),
            "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_JOB_NODELIST": f"fake[1-{nodes}]",
            "SLURM_SUBMIT_DIR": str(ROOT), **extra}


def slurm_log(tmp: Path) -> list[str]:
    path = tmp / "slurm.log"
    return path.read_text().splitlines() if path.exists() else []


def run_script(script: Path, *args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def dry_run(script: Path, *args: str, env: dict) -> list[list[str]]:
    """The commands a --dry-run prints (comment lines dropped), each split into words."""
    proc = run_script(script, "--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines() if line and not line.startswith("#")]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A background process in its own process group, output to log."""
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)


def session_members(sid: int) -> list[int]:
    """Live processes of the session `sid` (a process `start` made leads its own session)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def stop_group(proc: subprocess.Popen, grace: float = 60) -> None:
    """End a process started by `start` and everything it started: SIGTERM to its process group,
    then, after `grace` seconds, SIGKILL to whatever is left of its session (Ray's workers get
    process groups of their own, but stay in the session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    for pid in session_members(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def wait_until(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
