"""Data prep on a two-node Ray cluster on this machine (a head and a worker node, both started with
`ray start`), through launch/ray/local_cluster.sh and through launch/slurm/data.sbatch with srun and
scontrol stand-ins: the shards must be byte-identical to a plain local run.

Ray's own servers listen on every interface whatever --node-ip-address says; the clusters here are
reachable only with the test's token (RAY_AUTH_MODE=token) and live only for the test."""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from data_prep_helpers import make_text, make_text_corpus, tree_bytes
from launch_helpers import (DATA_SBATCH, LOCAL_CLUSTER, LOOPBACK_ENV, fake_slurm, free_port, slurm_log, start,
                            stop_group)
from pipeline_helpers import ROOT

# ~2.5 MB of text in 40 KB shards: enough tokenizing that the data_prep driver hands shards to
# the cluster's workers instead of finishing them all itself while it connects
SETTINGS = ["data.vocab_size=300", "data.shard_bytes=40000", "data.tokenizer_sample_bytes=300000",
            "data.val_fraction=0.05"]


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """Ray's session files in a short private dir (its socket paths are length-limited) and a
    private auth token, so nothing of ~/.ray or /tmp/ray is touched."""
    root = tmp_path_factory.mktemp("ray-auth")
    token = root / "token"
    token.write_text("0123456789abcdef" * 4)
    token.chmod(0o600)
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as tmpdir:
        env = {k: v for k, v in LOOPBACK_ENV.items() if k != "RAY_ADDRESS"}
        yield {**env, "RAY_TMPDIR": tmpdir, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
               "RAYON_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "texts"
    make_text_corpus(root, n=40)
    rng = random.Random(7)
    for i in range(50):
        (root / f"long{i:02d}.txt").write_text(make_text(rng, 10000))
    return root


@pytest.fixture(scope="module")
def local_build(corpus, ray_env, tmp_path_factory):
    """The reference: `python -m data_prep` on the single-process path (data.executor=local, no
    Ray at all), which the Ray path must reproduce byte for byte (tests/test_data_prep_ray.py
    checks the same for a local Ray instance)."""
    out = tmp_path_factory.mktemp("local") / "data"
    proc = subprocess.run([sys.executable, "-m", "data_prep", f"data.input={corpus}", f"data.output={out}",
                           "data.executor=local", *SETTINGS], capture_output=True, text=True, env=ray_env,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def ray_processes(tmpdir: str) -> list[str]:
    """Command lines of live processes that belong to a Ray session under tmpdir."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tmpdir in text:
            found.append(text)
    return found


def run_on_cluster(cmd: list[str], env: dict, log: Path) -> str:
    proc = start(cmd, env, log)
    try:
        proc.wait(timeout=300)
    finally:
        stop_group(proc, grace=30)
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def check_cluster_build(out: Path, local: Path, session_root: Path, log: str) -> None:
    assert "2 nodes up" in log
    assert tree_bytes(out) == tree_bytes(local)
    assert len(json.loads((out / "manifest.json").read_text())["shards"]) >= 20
    # the driver joined the cluster (no Ray session of its own) and Ray workers ran shards for it
    sessions = [p for p in session_root.glob("session_2*") if p.is_dir()]
    assert len(sessions) == 1, sessions
    logs = sessions[0] / "logs"
    drivers = sorted(p.name.split("-")[3][:8] for p in logs.glob("python-core-driver-*.log"))
    job_workers = {p.name.split("-")[2] for p in logs.glob("worker-*.out")} - {"ffffffff"}
    assert job_workers & set(drivers), f"no Ray worker process ran a task for the drivers {drivers}"


@pytest.mark.slow
def test_local_two_node_cluster_builds_the_same_shards(corpus, local_build, ray_env, tmp_path):
    session_root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    env = {**ray_env, "RAY_TMPDIR": str(session_root), "RAY_PORT": str(free_port()), "WORKERS": "1",
           "RAY_CPUS": "1"}
    out = tmp_path / "cluster"
    try:
        log = run_on_cluster(["bash", str(LOCAL_CLUSTER), "--", sys.executable, "-m", "data_prep",
                              f"data.input={corpus}", f"data.output={out}", *SETTINGS], env, tmp_path / "log")
        check_cluster_build(out, local_build, session_root / "ray", log)
        assert ray_processes(str(session_root)) == []  # the script stopped both nodes
    finally:
        shutil.rmtree(session_root, ignore_errors=True)


@pytest.mark.slow
def test_data_sbatch_builds_the_same_shards_on_a_two_node_allocation(corpus, local_build, ray_env, tmp_path):
    session_root = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    env = fake_slurm(tmp_path, nodes=2, job_id=99, base=ray_env, RAY_TMPDIR=str(session_root),
                     RAY_PORT=str(free_port()), RAY_CPUS="1", RAY_WAIT_S="120")
    out = tmp_path / "sbatch"
    try:
        cmd = ["bash", str(DATA_SBATCH), f"data.input={corpus}", f"data.output={out}", *SETTINGS]
        log = run_on_cluster(cmd, env, tmp_path / "log")
        check_cluster_build(out, local_build, session_root / "ray", log)
        # node names from scontrol; the head on the first node, then the workers on the others
        ray = str(Path(sys.executable).parent / "ray")
        assert slurm_log(tmp_path) == ["scontrol show hostnames fake[1-2]", f"srun nodes=1 first=0 {ray}",
                                       f"srun nodes=1 first=1 {ray}"]
        assert ray_processes(str(session_root)) == []  # the script stopped both nodes
    finally:
        shutil.rmtree(session_root, ignore_errors=True)
