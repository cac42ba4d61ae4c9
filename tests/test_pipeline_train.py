"""End-to-end training on CPU: a tiny model on a synthetic data dir, one or two processes."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from model import load_exported
from pipeline.data.data_loader import DataDir
from pipeline.data.val_windows import ValWindows
from pipeline.evaluate import evaluate
from pipeline.export import main as export_main
from pipeline.inference.run_loading import load

from pipeline_helpers import ENV, REF_VAL, ROOT, TINY, metrics, run_train


@pytest.fixture
def data(shared_data):
    return shared_data


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

    out = data / "export-a"
    assert export_main(["--run", str(data / "runs" / "a"), "--out", str(out)]) == 0
    model = load_exported(out)
    assert (out / "tokenizer.json").read_bytes() == (data / "data" / "tokenizer.json").read_bytes()
    assert model.cfg.vocab_size == 300 and model.cfg.n_layer == 3
    # the exported weights are the trained ones: they reproduce the run's last validation loss,
    # over the first val_batches (8) x global batch (4) windows of the val split
    val = torch.from_numpy(ValWindows(DataDir.open(data / "data"), 32, 32).tokens(range(32)))
    with torch.no_grad():
        logits, _ = model(val[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, 300), val[:, 1:].reshape(-1)).item()
    assert loss == pytest.approx(rows[-1]["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_zero_stages_give_the_same_losses_and_weights(data, plain_run):
    """Five steps under each ZeRO stage: the same losses while the model learns, and the same
    weights at the end (consolidated from each stage's own checkpoint layout)."""
    from pipeline.runs import consolidated_state_dict

    losses = {stage: plain_run(stage) for stage in (0, 1, 2, 3)}
    assert losses[0][-1] < losses[0][0] - 0.1  # the steps changed the model: equality means something
    weights = {stage: consolidated_state_dict(data / "runs" / f"plain-z{stage}" / "checkpoints",
                                              "step00000005", stage) for stage in losses}
    for stage in (1, 2, 3):
        assert losses[stage] == pytest.approx(losses[0], rel=1e-4), losses
        assert weights[stage].keys() == weights[0].keys()
        for name, tensor in weights[0].items():
            torch.testing.assert_close(weights[stage][name], tensor, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_grad_accum(data, two_rank_zero2):
    """The same global batches of 8 windows on multi-shard data: 1 rank x 4 accumulation steps,
    or 2 ranks x 2: the same tokens at every step, the same losses, and the same val_loss (over
    the same 8 val windows, 4 per rank on 2 ranks)."""
    from pipeline.instruments.batch_log import read_steps

    args = ["train.max_steps=4", "train.global_batch=8", "train.micro_batch=2", "train.zero_stage=2",
            "train.export=false", *REF_VAL]
    run_train(data, "train.run_name=accum", *args,
              env={"GOLDFINCH_BATCH_LOG": str(data / "batches" / "accum")})
    ref, accum = read_steps(data / "batches" / "ref"), read_steps(data / "batches" / "accum")
    # the same 8 windows at every step (the loader reads ahead: later steps are logged too)
    assert all(len(accum[s]) == 8 and accum[s] == ref[s] for s in range(1, 5))
    # `make train NPROC=2` goes through launch/train.sh and the deepspeed launcher
    launch = [*TINY, f"data.path={data / 'data'}", f"train.out_dir={data / 'runs'}",
              "train.run_name=launcher", *args]
    proc = subprocess.run(["bash", str(ROOT / "launch" / "train.sh"), *launch], capture_output=True, text=True,
                          env={**ENV, "NPROC": "2", "PY": sys.executable, "GLOO_SOCKET_IFNAME": "lo"},
                          timeout=600)  # gloo over the reference run's interface: bitwise equal
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, launched = metrics(data, "accum"), metrics(data, "launcher")
    assert [r["tokens"] for r in one] == [8 * 32 * s for s in range(1, 5)]
    # gradients summed in another order differ in the last bits only (the L2Wrap penalty scales
    # with the loss, so accumulation does not change its weight)
    assert [r["loss"] for r in one] == pytest.approx(two_rank_zero2, rel=1e-4)
    assert [r["loss"] for r in launched] == two_rank_zero2
    val = {run: [(r["step"], r["val_loss"]) for r in metrics(data, run) if "val_loss" in r]
           for run in ("accum", "ref-2rank-zero2", "launcher")}
    assert [s for s, _ in val["accum"]] == [s for s, _ in val["ref-2rank-zero2"]] == [2, 4]
    assert val["launcher"] == val["ref-2rank-zero2"]
    two = [v for _, v in val["ref-2rank-zero2"]]
    assert [v for _, v in val["accum"]] == pytest.approx(two, rel=1e-4)
    # the same windows on 1 and 2 ranks: one single-process evaluation of each run's final
    # weights (the val split's first global batch, in one fixed order) gives each run's val_loss
    for run in ("accum", "ref-2rank-zero2"):
        scored = evaluate(load(data / "runs" / run), data / "data")
        assert (scored["windows"], scored["global_batch"]) == (8, 8)
        assert scored["loss"] == pytest.approx(val[run][-1][1], rel=1e-6), run


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 3])
def test_fused_cross_entropy_trains_like_the_plain_loss(data, plain_run, stage):
    """train.fused_ce reads the head weight inside the model's forward: under ZeRO-3 too."""
    run_train(data, f"train.run_name=ce{stage}", "train.max_steps=5", f"train.zero_stage={stage}",
              "train.fused_ce=true", "train.export=false")
    assert [r["loss"] for r in metrics(data, f"ce{stage}")] == pytest.approx(plain_run(stage), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("variant, overrides", [("rwkv7", ["model.arch=rwkv7"]),
                                                ("goldfinch7", ["model.lower=rwkv7"])])
def test_rwkv7_and_goldfinch7_train_and_export(data, variant, overrides):
    """The trainer, ZeRO-2 and the exporter know nothing of the mixers: the RWKV-7 parts train
    through the chunked WKV7 (T=32 spans two chunks) and export as any model does."""
    run = f"{variant}-e2e"
    run_train(data, f"train.run_name={run}", "train.max_steps=12", "train.zero_stage=2", *overrides)
    rows = metrics(data, run)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
    out = data / f"export-{run}"
    assert export_main(["--run", str(data / "runs" / run), "--out", str(out)]) == 0
    model = load_exported(out)
    assert (model.cfg.variant, model.cfg.channel_mixer) == (variant, "x070")
