"""Multi-node training on one machine: two torchrun "nodes" through launch/train.sh, and the Slurm
batch script (with srun/scontrol stand-ins) through a time-limit signal, a requeue and a resume."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest

from launch_helpers import (LOOPBACK_ENV, TRAIN_SBATCH, TRAIN_SH, fake_slurm, free_port, slurm_log, start,
                            stop_group, wait_until)
from pipeline_helpers import ROOT, TINY, make_data_dir, metrics


@pytest.fixture
def data(shared_data):
    return shared_data


def overrides(tmp, run: str, *more: str) -> list[str]:
    return [*TINY, f"data.path={tmp / 'data'}", f"train.run_name={run}", "train.zero_stage=2",
            "train.export=false", *more]


@pytest.fixture
def one_node(two_rank_zero2):
    """Losses of 4 ZeRO-2 steps on one node with two processes (torchrun --standalone)."""
    return two_rank_zero2


def four_steps(tmp, run: str) -> list[str]:
    return overrides(tmp, run, "train.max_steps=4", "train.global_batch=8", "train.micro_batch=2",
                     f"train.out_dir={tmp / 'runs'}", f"tracking.dir={tmp / 'mlruns'}")


@pytest.mark.slow
def test_two_nodes_through_train_sh_match_one_node_with_two_processes(data, one_node):
    port = free_port()
    nodes = [start(["bash", str(TRAIN_SH), *four_steps(data, "two")],
                   {**LOOPBACK_ENV, "NNODES": "2", "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(port)}, data / f"node{rank}.log")
             for rank in (0, 1)]
    try:
        for node in nodes:
            node.wait(timeout=300)
    finally:
        for node in nodes:
            stop_group(node, grace=5)
    for rank, node in enumerate(nodes):
        assert node.returncode == 0, (data / f"node{rank}.log").read_text()[-3000:]
    rows = metrics(data, "two")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == one_node


@pytest.mark.slow
def test_hostfile_through_the_deepspeed_launcher_matches_one_node(data, one_node, tmp_path):
    """HOSTFILE mode with one host: the deepspeed launcher checks ssh (a stand-in here that only
    logs the check), then starts the hostfile's slots=2 processes."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ssh").write_text(f'#!/bin/sh\necho "$*" >>{tmp_path / "ssh.log"}\n')
    (tmp_path / "bin" / "ssh").chmod(0o755)
    (tmp_path / "hosts").write_text("localhost slots=2\n")
    env = {**LOOPBACK_ENV, "PATH": f"{tmp_path / 'bin'}:{LOOPBACK_ENV['PATH']}",
           "HOSTFILE": str(tmp_path / "hosts"), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    proc = subprocess.run(["bash", str(TRAIN_SH), *four_steps(data, "hostfile")], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ssh_check = ["-o", "PasswordAuthentication=no", "localhost", "hostname"]
    assert (tmp_path / "ssh.log").read_text().split() == ssh_check
    assert [r["loss"] for r in metrics(data, "hostfile")] == one_node


@pytest.mark.slow
def test_slurm_time_limit_checkpoints_requeues_and_resumes(tmp_path):
    """USR1 (the --signal warning) -> SIGTERM to the step -> checkpoint -> scontrol requeue; the
    requeued job (SLURM_RESTART_COUNT=1) resumes from that checkpoint and finishes the run."""
    data = tmp_path
    make_data_dir(data / "data", docs_per_shard=(40,), val_docs=(10,))
    shared = data / "shared"
    env = fake_slurm(data, nodes=2, job_id=77, GPUS_PER_NODE="1", RUN_ROOT=str(shared),
                     MASTER_PORT=str(free_port()))
    args = overrides(data, "slurm", "train.max_steps=30", "train.save_every=0", "tracking.enabled=true")
    metrics_file = shared / "runs" / "slurm" / "metrics.jsonl"
    job = start(["bash", str(TRAIN_SBATCH), *args], env, data / "job1.log")
    try:
        wait_until(lambda: metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 3, 180,
                   "the first training steps", job)
        job.send_signal(signal.SIGUSR1)
        job.wait(timeout=180)
    finally:
        stop_group(job, grace=5)
    log = (data / "job1.log").read_text()
    assert job.returncode == 0, log[-3000:]
    assert "scontrol requeue 77" in slurm_log(data), log[-3000:]
    steps = [line.split()[:3] for line in slurm_log(data) if line.startswith("srun")]
    assert steps == [["srun", "nodes=2", "first=0"]]
    ckpts = shared / "runs" / "slurm" / "checkpoints"
    stopped_at = int((ckpts / "latest").read_text().strip().removeprefix("step"))
    assert 3 <= stopped_at < 30
    assert json.loads(metrics_file.read_text().splitlines()[-1])["step"] == stopped_at
    assert (shared / "mlruns" / "mlflow.db").is_file()

    requeued = subprocess.run(["bash", str(TRAIN_SBATCH), *args], capture_output=True, text=True, cwd=ROOT,
                              env={**env, "SLURM_RESTART_COUNT": "1", "MASTER_PORT": str(free_port())},
                              timeout=300)
    assert requeued.returncode == 0, requeued.stdout[-2000:] + requeued.stderr[-3000:]
    assert f"resumed from step{stopped_at:08d} at step {stopped_at}" in requeued.stdout + requeued.stderr
    assert sum("requeue" in line for line in slurm_log(data)) == 1  # a finished run is not requeued
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert (ckpts / "latest").read_text().strip() == "step00000030"
