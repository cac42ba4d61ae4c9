"""End-to-end training on CPU: a tiny model on a synthetic data dir, one or two processes."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from model import load_exported
from pipeline.data_loader import DataDir

from pipeline_helpers import ENV, ROOT, TINY, make_data_dir, metrics, run_train

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
            f"tracking.dir={data / 'mlruns'}", "train.run_name=launcher", "train.max_steps=4", "train.global_batch=8", "train.zero_stage=2"]
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


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 3])
def test_fused_cross_entropy_trains_like_the_plain_loss(data, stage):
    """train.fused_ce reads the head weight inside the model's forward: under ZeRO-3 too."""
    for fused in ("false", "true"):
        run_train(data, f"train.run_name=ce{fused}", "train.max_steps=3", f"train.zero_stage={stage}",
                  f"train.fused_ce={fused}", "train.export=false")
    plain, fused = metrics(data, "cefalse"), metrics(data, "cetrue")
    assert [r["loss"] for r in fused] == pytest.approx([r["loss"] for r in plain], rel=1e-5)
