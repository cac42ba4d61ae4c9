"""Distillation's pieces: chunked KL, the per-phase losses, the align swap, the `mixers`
selector, token budgets and per-phase lr schedules, and the start-up checks."""
import json

import pytest
import torch
import torch.nn.functional as F

from model import build_model, load_model_config
from model.align import AttentionSwap
from pipeline.config import fit_to_world, load_run_config
from pipeline.distill.kl import chunked_kl
from pipeline.distill.objective import parse_loss
from pipeline.training import freezing
from pipeline.training.schedule import scheduled_lr

TINY = ["n_layer=3", "n_embd=64", "head_size=16", "ctx_len=16", "vocab_size=97",
        "mix_lora_rank=8", "decay_lora_rank=8"]


def naive_kl(h_s, w_s, h_t, w_t, temperature):
    z_s = h_s @ w_s.t() / temperature
    z_t = h_t @ w_t[:w_s.shape[0]].t() / temperature
    kl = F.kl_div(F.log_softmax(z_s, -1), F.log_softmax(z_t, -1), log_target=True, reduction="none")
    return kl.sum(-1).mean() * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_kl_equals_whole_logits(temperature):
    """Several chunks, the last one short, a teacher with a larger (padded) vocabulary and
    another width: value and both gradients as the plain computation's."""
    h_s = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    w_s = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    h_t, w_t = torch.randn(37, 8, dtype=torch.float64), torch.randn(53, 8, dtype=torch.float64)
    got = chunked_kl(h_s, w_s, h_t, w_t, temperature, chunk=10)
    want = naive_kl(h_s, w_s, h_t, w_t, temperature)
    assert torch.allclose(got.double(), want, rtol=1e-6)
    for g, w in zip(torch.autograd.grad(got, (h_s, w_s)), torch.autograd.grad(want, (h_s, w_s))):
        assert torch.allclose(g, w, atol=1e-7)


def test_chunked_kl_is_zero_for_the_same_model_and_refuses_a_smaller_teacher():
    h, w = torch.randn(9, 8), torch.randn(20, 8)
    assert chunked_kl(h, w, h, w, chunk=4).abs() < 1e-6
    with pytest.raises(ValueError, match="smaller than the student"):
        chunked_kl(h, w, h, w[:10])


def test_parse_loss_forms_and_errors():
    assert parse_loss("kl", "x") == {"kl": 1.0}
    assert parse_loss({"kl": 0.5, "ce": 0.5}, "x") == {"kl": 0.5, "ce": 0.5}
    for bad, match in [("mse", "unknown loss 'mse'"), ({"kl": -1}, "kl=-1"), ({"ce": 0}, "every weight"),
                       ({"align": 1, "kl": 1}, "cannot be summed"), (3, "expected one of")]:
        with pytest.raises(ValueError, match=match):
            parse_loss(bad, "freeze.phases[0].loss")


def test_phase_losses_from_the_command_line():
    cfg = load_run_config(None, ["freeze.phases=[{until_step:2,train:[mixers],loss:align},"
                                 "{train:[all],loss:{kl:0.5,ce:0.5}}]", "distill.teacher=t"])
    assert cfg.freeze.phases[0].loss == "align"
    assert cfg.freeze.phases[1].loss == {"kl": 0.5, "ce": 0.5}


def test_mixers_selects_every_time_mix_parameter_and_the_key_compression():
    model = build_model(load_model_config(None, ["arch=goldfinch", *TINY]), device="meta")
    chosen = freezing.select(model, "mixers")
    names = {n for n, _ in model.named_parameters()}
    want = {n for n in names if ".att." in n or n.startswith("kv_compression.")}
    assert chosen == want
    assert any(".att.query" in n for n in chosen) and any(".att.receptance" in n for n in chosen)
    assert not any(".ffn." in n or ".ln1." in n or ".ln2." in n or n.startswith(("emb", "head", "ln"))
                   for n in chosen)


@pytest.mark.parametrize("arch", ["goldfinch", "rwkv7"])
def test_align_swap_feeds_the_teacher_output_and_scores_each_layer(arch):
    """The stream after the swap is the one whose time-mix outputs are the teacher's; each layer's
    loss is ARWKV's mean ||t - s|| / sqrt(C); recomputation (grad_ckpt) changes nothing."""
    torch.manual_seed(0)
    model = build_model(load_model_config(None, [f"arch={arch}", *TINY]))
    idx = torch.randint(0, 97, (2, 12))
    teacher = [torch.randn(2, 12, 64) for _ in range(3)]
    seen = []
    hooks = [b.att.register_forward_hook(lambda m, a, out: seen.append(out[0].detach()))
             for b in model.blocks]
    swap = AttentionSwap(teacher)
    h, _ = model(idx, align=swap, return_hidden=True)
    for hook in hooks:
        hook.remove()
    want = [torch.linalg.vector_norm(t - s, dim=-1).mean() / 8 for t, s in zip(teacher, seen)]
    assert torch.allclose(torch.stack([swap.losses[i] for i in range(3)]), torch.stack(want))
    replaced = [b.att.register_forward_hook(lambda m, a, out, i=i: (teacher[i], out[1]))
                for i, b in enumerate(model.blocks)]
    h_ref, _ = model(idx, return_hidden=True)
    for hook in replaced:
        hook.remove()
    assert torch.allclose(h, h_ref, atol=1e-6)
    grads = []
    for ckpt in (False, True):
        model.grad_ckpt, model.training = ckpt, True
        model.zero_grad()
        swap = AttentionSwap(teacher)
        loss, _ = model(idx, align=swap, loss_fn=lambda m, h: swap.loss())
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_align_swap_names_a_shape_mismatch():
    swap = AttentionSwap([torch.zeros(1, 4, 8)])
    with pytest.raises(ValueError, match="layer 0"):
        swap.swap(0, torch.zeros(1, 4, 16))


def test_token_budgets_become_steps_of_the_global_batch():
    cfg = load_run_config(None, ["model.ctx_len=32", "train.global_batch=8", "train.micro_batch=2",
                                 "train.max_tokens=10000", "train.budget_scale=0.5",
                                 "freeze.phases=[{until_tokens:2048,train:[mixers]},{train:[all]}]"])
    fitted = fit_to_world(cfg, 2)  # 8 windows x 32 tokens = 256 tokens a step, 2 accumulation steps
    assert fitted.train.grad_accum == 2
    assert fitted.freeze.phases[0].until_step == 4      # 2048 x 0.5 / 256
    assert fitted.train.max_steps == 20                 # ceil(10000 x 0.5 / 256)
    with pytest.raises(ValueError, match="until_tokens"):
        fit_to_world(load_run_config(None, ["freeze.phases=[{until_tokens:64,until_step:2,train:[all]},"
                                            "{train:[all]}]"]), 1)


def test_a_phase_with_its_own_lr_decays_over_its_own_steps():
    cfg = load_run_config(None, [
        "train.max_steps=30", "train.warmup_steps=0", "train.lr_schedule=linear",
        "freeze.phases=[{until_step:10,train:[mixers],lr:1e-3,lr_final:1e-5},"
        "{until_step:20,train:[all],lr:1e-5},{train:[all]}]"])
    lr = [scheduled_lr(cfg, s, s * 100, 100, freezing.phase_at(cfg.freeze, s)) for s in range(30)]
    assert lr[0] == pytest.approx(1e-3) and lr[9] == pytest.approx(1e-5)
    assert lr[4] == pytest.approx(1e-3 + (1e-5 - 1e-3) * 4 / 9)
    assert all(x == pytest.approx(1e-5) for x in lr[10:20])
    assert lr[20] != pytest.approx(1e-5)  # the last phase follows the run's own schedule
    with pytest.raises(ValueError, match="lr_final"):
        freezing.validate(freezing.FreezeConfig([freezing.PhaseConfig(train=["all"], lr_final=1e-5)]),
                          build_model(load_model_config(None, TINY), device="meta"), 10)


def test_startup_checks_name_the_key(tmp_path):
    from pipeline.distill.config import check_tokenizer, describe, validate
    from pipeline.errors import PipelineError

    kl_phase = ["freeze.phases=[{until_step:2,train:[mixers],loss:align},{train:[all],loss:kl}]"]
    with pytest.raises(ValueError, match="set distill.teacher"):
        validate(load_run_config(None, kl_phase))
    with pytest.raises(PipelineError, match="no readable config.json"):
        validate(load_run_config(None, [*kl_phase, f"distill.teacher={tmp_path}"]))
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 64, "vocab_size": 300}))
    sized = ["model.n_layer=3", "model.n_embd=64", "model.vocab_size=300"]
    with pytest.raises(ValueError, match="align loss pairs layer with layer"):
        validate(load_run_config(None, [*kl_phase, *sized, f"distill.teacher={tmp_path}"]))
    with pytest.raises(ValueError, match="vocabulary \\(300\\) is smaller"):
        validate(load_run_config(None, ["model.vocab_size=400", f"distill.teacher={tmp_path}"]))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="data.tokenizer="):
        check_tokenizer(describe(tmp_path), "0" * 64, "data/x", allow_other=False)
    check_tokenizer(describe(tmp_path), "0" * 64, "data/x", allow_other=True)


@pytest.mark.parametrize("recipe", ["distill-radlads-goldfinch", "distill-arwkv-goldfinch"])
def test_distill_recipes_load_and_scale(recipe, tmp_path):
    """Each recipe layered under a student's model.yaml: three stages with their losses, lrs and
    budgets in tokens; budget_scale shrinks every budget alike."""
    from pipeline.distill.config import phase_losses

    (tmp_path / "model.yaml").write_text("model:\n  n_layer: 3\n  n_embd: 64\n  norm: rmsnorm\n")
    files = [f"configs/recipes/{recipe}.yaml", str(tmp_path / "model.yaml")]
    cfg = load_run_config(files, ["train.budget_scale=0.001"])
    assert cfg.model.norm == "rmsnorm" and cfg.model.n_layer == 3
    assert [list(w) for w in phase_losses(cfg)][:2] == [["align"], ["kl"]]
    assert cfg.freeze.phases[0].train == ["mixers"] and cfg.freeze.phases[0].lr is not None
    fitted = fit_to_world(cfg, 1)
    per_step = fitted.train.micro_batch * fitted.train.grad_accum * fitted.model.ctx_len
    bounds = [p.until_step for p in fitted.freeze.phases[:-1]]
    tokens = [p.until_tokens for p in cfg.freeze.phases[:-1]]
    assert bounds == [-(-t * 0.001 // per_step) for t in tokens] and bounds[0] < bounds[1]
    assert fitted.train.max_steps == -(-cfg.train.max_tokens * 0.001 // per_step) > bounds[1]


def test_a_from_transformers_student_brings_its_model_keys(tmp_path):
    """init_from a student (teacher.json beside its config.json): its model keys are the run's
    unless set; ctx_len stays the recipe's; a key set to another value is refused by name."""
    from dataclasses import asdict

    from pipeline.distill.config import check_student

    student = load_model_config(None, ["n_layer=3", "n_embd=64", "head_size=16", "ctx_len=4096",
                                       "vocab_size=300", "norm=rmsnorm", "emb_norm=false",
                                       "att_bias=true", "cmix=swiglu", "dim_ffn=128"])
    (tmp_path / "config.json").write_text(json.dumps(asdict(student)))
    (tmp_path / "teacher.json").write_text("{}")
    cfg = load_run_config("configs/recipes/distill-radlads-goldfinch.yaml",
                          [f"train.init_from={tmp_path}"])
    assert (cfg.model.norm, cfg.model.att_bias, cfg.model.emb_norm, cfg.model.dim_ffn) == \
        ("rmsnorm", True, False, 128)
    assert cfg.model.ctx_len == 512  # the recipe's
    check_student(cfg)
    clash = load_run_config(None, [f"train.init_from={tmp_path}", "model.att_bias=false"])
    with pytest.raises(ValueError, match="model.att_bias=False \\(the student's: True\\)"):
        check_student(clash)
    (tmp_path / "teacher.json").unlink()  # an ordinary export: nothing is taken from it
    assert load_run_config(None, [f"train.init_from={tmp_path}"]).model.norm == "layernorm"
