"""The paper presets load, validate for every arch, and carry the reference's minipile recipe
(the numbers of its configs/*minipile.yaml, restated here)."""
import pytest

from model import build_model
from pipeline.config import fit_to_world, load_run_config
from pipeline.training.optim import param_groups

from pipeline_helpers import ROOT

RECIPES = ROOT / "configs" / "recipes"
MINIPILE_TOKENS = 1_498_226_207
# preset -> (ctx, windows per step, lr, lr_final, GPUs and accumulation of the reference's run)
REFERENCE = {
    "paper-L12-D768-minipile.yaml": (1024, 64, 6e-4, 2e-4, 2, 1),
    "paper-L24-D2048-ctx4096-minipile.yaml": (4096, 128, 3e-4, 1e-4, 4, 8),
}
ARCHS = {"goldfinch": [], "finch": ["model.arch=finch"],
         "finch-c2": ["model.arch=finch", "model.lower=finch_c2"], "llama": ["model.arch=llama"]}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("preset", sorted(REFERENCE))
def test_preset_validates_and_is_the_reference_recipe(preset, arch):
    cfg = load_run_config(RECIPES / preset, ARCHS[arch])
    ctx, windows, lr, lr_final, gpus, accum = REFERENCE[preset]
    t, m = cfg.train, cfg.model
    assert (m.n_layer, m.ctx_len, m.vocab_size) == ((12, 1024, 65536) if "L12" in preset
                                                    else (24, 4096, 65536))
    assert m.ctx_len == ctx and t.global_batch == windows
    assert fit_to_world(cfg, gpus).train.grad_accum == accum
    assert (t.lr, t.lr_final, t.warmup_steps, t.lr_schedule) == (lr, lr_final, 10, "cos_quarter")
    assert (t.weight_decay, t.beta1, t.beta2, t.eps) == (0.001, 0.9, 0.99, 1e-8)
    assert (t.l2wrap, t.grad_clip, t.precision) == (1e-4, 1.0, "bf16")
    assert t.total_tokens == MINIPILE_TOKENS
    # the reference stops at the first step whose start is at or past the token budget
    per_step = windows * ctx
    assert (t.max_steps - 1) * per_step < MINIPILE_TOKENS <= t.max_steps * per_step
    expected_lower = {"goldfinch": "finch_c2", "finch": "finch", "finch-c2": "finch_c2",
                      "llama": None}[arch]
    assert m.lower_mixer == expected_lower
    model = build_model(m, device="meta")
    assert param_groups(model, t.weight_decay)  # the groups build for every arch
