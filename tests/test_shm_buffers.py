"""DeepSpeed's /dev/shm all-reduce buffers: a 2-rank CPU run with all ranks on one node (LOCAL_SIZE
equal to WORLD_SIZE, as the deepspeed launcher sets them, which `make train NPROC=2` uses) leaves
none behind, killed or finished; stale ones our runs noted are removed at the next start, and
nothing else is."""
import mmap
import os
import socket
from pathlib import Path

import pytest

from launch_helpers import LOOPBACK_ENV, free_port
from pipeline.training import shm_buffers
from pipeline_helpers import make_data_dir, metrics, run_train

SHM = Path("/dev/shm")


def ours(port: int) -> list[str]:
    return sorted(p.name for p in SHM.glob(f"{shm_buffers.PREFIX}_*_{port}_*"))


@pytest.mark.slow
@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm")
def test_a_two_rank_run_leaves_no_buffers_killed_or_finished(tmp_path):
    make_data_dir(tmp_path / "data")
    port = free_port()
    args = ["train.run_name=shm", "train.max_steps=2", "train.save_every=1", "train.export=false"]
    env = {**LOOPBACK_ENV, "LOCAL_SIZE": "2", "MASTER_PORT": str(port)}
    killed = run_train(tmp_path, *args, nproc=2, check=False, env={**env, "GOLDFINCH_FAULTS": "kill_after_step:1"})
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert "shm_comm_op built" in killed.stdout + killed.stderr  # so the buffers were made
    assert ours(port) == []
    run_train(tmp_path, *args, nproc=2, env=env)
    assert [r["step"] for r in metrics(tmp_path, "shm")] == [1, 2]
    assert ours(port) == []


@pytest.fixture
def fake_shm(tmp_path, monkeypatch):
    monkeypatch.setattr(shm_buffers, "SHM", tmp_path / "shm")
    monkeypatch.setattr(shm_buffers, "ledger_dir", lambda: tmp_path / "ledger")
    (tmp_path / "shm").mkdir()
    return tmp_path / "shm"


def buffer(shm: Path, port: int, rank: int = 0, noted: bool = True) -> Path:
    name = shm_buffers.buffer_name(rank, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    (shm / name).write_bytes(b"\0" * 4096)
    if noted:
        shm_buffers.record(name)
    return shm / name


def test_stale_buffers_of_our_runs_go_and_nothing_else(fake_shm):
    stale = [buffer(fake_shm, free_port(), rank) for rank in (0, 1)]
    foreign = buffer(fake_shm, free_port(), noted=False)  # not ours: never touched
    own_run = buffer(fake_shm, 4242)  # this run's port: it recreates and releases them itself
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        live_port = buffer(fake_shm, listener.getsockname()[1])
        with open(buffer(fake_shm, free_port()), "r+b") as fh, mmap.mmap(fh.fileno(), 0) as _:
            mapped = Path(fh.name)
            removed = shm_buffers.remove_stale(keep_port=4242)
    assert sorted(removed) == sorted(p.name for p in stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in (foreign, own_run, live_port, mapped))
    assert sorted(os.listdir(shm_buffers.ledger_dir())) == sorted(p.name for p in (own_run, live_port, mapped))


def test_release_unlinks_the_buffer_and_its_ledger_entry(fake_shm):
    path = buffer(fake_shm, free_port())
    shm_buffers.release(path.name)
    assert not path.exists() and os.listdir(shm_buffers.ledger_dir()) == []


def test_the_name_is_deepspeeds():
    env = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "LOCAL_SIZE": "2", "WORLD_SIZE": "2"}
    assert shm_buffers.buffer_name(1, env) == f"deepspeed_allreduce_buffer_{os.getuid()}_10.0.0.1_29500_1"
    assert shm_buffers.port_of(shm_buffers.buffer_name(1, env)) == 29500
    assert shm_buffers.created_by_deepspeed("gloo", env)
    assert not shm_buffers.created_by_deepspeed("nccl", env)
    assert not shm_buffers.created_by_deepspeed("gloo", {**env, "LOCAL_SIZE": "1"})  # ranks on 2 nodes
