"""The lr schedule against the reference trainer's (its on_train_batch_start), restated here."""
import math
from types import SimpleNamespace

import pytest

from pipeline.config import load_run_config
from pipeline.training.schedule import lr_at

from pipeline_helpers import metrics, run_train


def reference_lr(global_step, lr_init, lr_final, warmup_steps, exit_tokens, ctx, bsz, kind):
    """The reference: progress over real tokens after the warm-up tokens, then the warm-up factor."""
    real_tokens = global_step * ctx * bsz
    warmup_tokens = warmup_steps * ctx * bsz
    progress = (real_tokens - warmup_tokens) / (abs(exit_tokens) - warmup_tokens)
    progress = max(0, min(1, progress))
    if kind == "linear":
        lr = lr_final + (lr_init - lr_final) * (1.0 - progress)
    elif kind == "exp":
        lr = lr_init * math.exp(math.log(lr_final / lr_init) * progress)
    else:
        lr = lr_final + (lr_init - lr_final) * math.cos(math.pi / 2 * progress)
    if global_step < warmup_steps:
        lr = lr * (0.2 + 0.8 * global_step / warmup_steps)
    return lr


def train_cfg(**kw):
    base = dict(lr=6e-4, lr_final=2e-4, warmup_steps=10, max_steps=100, total_tokens=None,
                lr_schedule="cos_quarter")
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("kind", ["cos_quarter", "linear", "exp"])
def test_matches_the_reference_formulas(kind):
    tps = 64 * 1024
    t = train_cfg(lr_schedule=kind, total_tokens=1_498_226_207)
    ref_kind = {"cos_quarter": "cos"}.get(kind, kind)
    for step in (0, 1, 5, 9, 10, 11, 500, 10_000, 22_860, 22_861, 30_000):
        ours = lr_at(step, step * tps, t, tps)
        theirs = reference_lr(step, 6e-4, 2e-4, 10, 1_498_226_207, 1024, 64, ref_kind)
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), step


def test_step_zero_trains_at_a_fifth_and_the_end_at_lr_final():
    t = train_cfg()
    assert lr_at(0, 0, t, 100) == pytest.approx(0.2 * 6e-4)
    assert lr_at(10, 1000, t, 100) == pytest.approx(6e-4)  # the decay starts after the warm-up
    assert lr_at(100, 10_000, t, 100) == pytest.approx(2e-4)
    assert lr_at(200, 20_000, t, 100) == pytest.approx(2e-4)  # clamped
    half = lr_at(55, 5500, train_cfg(lr_schedule="cosine"), 100)
    assert half == pytest.approx(4e-4)


def test_unknown_schedule_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="train.lr_schedule='cos'"):
        load_run_config(None, ["train.lr_schedule=cos"])
    with pytest.raises(ValueError, match="train.lr_schedule='exp'"):
        load_run_config(None, ["train.lr_schedule=exp", "train.lr_final=0"])
    with pytest.raises(ValueError, match="train.total_tokens"):
        load_run_config(None, ["train.total_tokens=0"])
    assert load_run_config(None, []).train.lr_schedule == "cos_quarter"


@pytest.mark.slow
def test_logged_lr_is_the_reference_schedule(shared_data):
    """Every step's lr in metrics.jsonl, for a run whose decay is set in tokens."""
    tokens_per_step, steps, total = 4 * 32, 8, 6 * 4 * 32
    run_train(shared_data, "train.run_name=lr-schedule", f"train.max_steps={steps}",
              "train.warmup_steps=3", f"train.total_tokens={total}", "train.export=false")
    logged = [r["lr"] for r in metrics(shared_data, "lr-schedule")]
    expected = [reference_lr(s, 3e-3, 1e-3, 3, total, 32, 4, "cos") for s in range(steps)]
    assert logged == pytest.approx(expected, rel=1e-12)
    assert logged[0] == pytest.approx(0.2 * 3e-3) and logged[-1] == pytest.approx(1e-3)
