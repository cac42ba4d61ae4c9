"""End-to-end training on CPU: a tiny model on a synthetic data dir, one or two processes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import load_exported
from pipeline.data_loader import DataDir

from pipeline_helpers import make_data_dir

TINY = ["model.n_layer=3", "model.n_embd=64", "model.head_size=16", "model.ctx_len=32",
        "model.mix_lora_rank=8", "model.decay_lora_rank=8", "train.micro_batch=4",
        "train.warmup_steps=2", "train.lr=3e-3", "train.lr_final=1e-3", "train.val_every=0",
        "train.log_every=0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ROOT = Path(__file__).resolve().parents[1]


def run_train(tmp_path: Path, *overrides, nproc: int = 1, check: bool = True):
    args = [*TINY, f"data.path={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'runs'}", *overrides]
    if nproc == 1:
        cmd = [sys.executable, "-m", "pipeline.train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "pipeline.train", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def metrics(tmp_path: Path, run: str):
    lines = (tmp_path / "runs" / run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def data(tmp_path):
    make_data_dir(tmp_path / "data", docs_per_shard=(40,), val_docs=(10,))
    return tmp_path


@pytest.mark.slow
def test_tiny_run_learns_logs_checkpoints_and_exports(data):
    run_train(data, "train.run_name=a", "train.max_steps=30", "train.save_every=10",
              "train.keep_last=2", "train.val_every=15", "train.zero_stage=2")
    rows = metrics(data, "a")
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert {"step", "loss", "lr", "tokens", "grad_norm", "tokens_per_s"} <= set(rows[0])
    assert rows[-1]["tokens"] == 30 * 4 * 32
    assert [r["step"] for r in rows if "val_loss" in r] == [15, 30]
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.5
    ckpts = data / "runs" / "a" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step00000030"
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == ["step00000020", "step00000030"]
    assert (data / "runs" / "a" / "config.yaml").is_file()

    out = data / "export"
    proc = subprocess.run([sys.executable, "-m", "pipeline.export", "--run", str(data / "runs" / "a"),
                           "--out", str(out)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = load_exported(out)
    assert model.cfg.vocab_size == 300 and model.cfg.n_layer == 3
    # the exported weights are the trained ones: they reproduce the run's last validation loss
    val = DataDir.open(data / "data").stream("val", 0, 1, 32, 1337, False)
    losses = []
    with torch.no_grad():
        for _ in range(8):
            batch = val.next_batch(4)
            logits, _ = model(batch[:, :-1])
            losses.append(F.cross_entropy(logits.reshape(-1, 300), batch[:, 1:].reshape(-1)).item())
    assert sum(losses) / len(losses) == pytest.approx(rows[-1]["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_zero_stages_give_the_same_first_losses(data):
    losses = {}
    for stage in (0, 1, 2, 3):
        run_train(data, f"train.run_name=z{stage}", "train.max_steps=3", f"train.zero_stage={stage}")
        losses[stage] = [r["loss"] for r in metrics(data, f"z{stage}")]
    for stage in (1, 2, 3):
        assert losses[stage] == pytest.approx(losses[0], rel=1e-4), losses


@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_grad_accum(data):
    """The same global batch of 8 windows: 1 rank x 2 accumulation steps, or 2 ranks x 1."""
    run_train(data, "train.run_name=one", "train.max_steps=4", "train.global_batch=8",
              "train.zero_stage=2")
    run_train(data, "train.run_name=two", "train.max_steps=4", "train.global_batch=8",
              "train.zero_stage=2", nproc=2)
    # `make train NPROC=2` goes through launch/train.sh and the deepspeed launcher
    args = [*TINY, f"data.path={data / 'data'}", f"train.out_dir={data / 'runs'}",
            "train.run_name=launcher", "train.max_steps=4", "train.global_batch=8", "train.zero_stage=2"]
    proc = subprocess.run(["bash", str(ROOT / "launch" / "train.sh"), *args], capture_output=True, text=True,
                          env={**ENV, "NPROC": "2", "PY": sys.executable}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two, launched = metrics(data, "one"), metrics(data, "two"), metrics(data, "launcher")
    assert [r["tokens"] for r in one] == [r["tokens"] for r in two] == [8 * 32 * s for s in range(1, 5)]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)
    assert [r["loss"] for r in launched] == [r["loss"] for r in two]


@pytest.mark.parametrize("override, needle", [
    ("train.zero_stage=5", "train.zero_stage=5"),
    ("train.precision=fp8", "train.precision='fp8'"),
    ("train.bogus=1", "bogus"),
    ("model.ctx_len=100000", "model.ctx_len=100000"),
    ("model.vocab_size=50", "model.vocab_size=50"),
    ("data.path=/nonexistent/dir", "/nonexistent/dir"),
    ("train.micro_batch=0", "train.micro_batch=0"),
    ("train.global_batch=6", "train.global_batch=6 is not divisible by train.micro_batch=4"),
])
def test_bad_config_fails_before_training(data, override, needle):
    proc = run_train(data, "train.max_steps=1", override, check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr[-2000:]
    assert not (data / "runs" / "goldfinch-tiny" / "metrics.jsonl").exists()
