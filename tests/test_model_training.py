"""Gradients reach every parameter, a tiny model overfits a batch, and init follows the paper."""
import math

import pytest
import torch
import torch.nn.functional as F

from model import build_model

from model_helpers import ARCHS, VOCAB, tiny_config, tiny_model


def lm_loss(model, idx):
    logits, _ = model(idx[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_gets_a_gradient(arch):
    model = tiny_model(arch)
    lm_loss(model, torch.randint(0, VOCAB, (2, 17))).backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert missing == []


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_overfits_one_batch(arch):
    model = build_model(tiny_config(arch, n_layer=3))
    idx = torch.randint(0, VOCAB, (4, 24))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = lm_loss(model, idx).item()
    for _ in range(60):
        opt.zero_grad()
        loss = lm_loss(model, idx)
        loss.backward()
        opt.step()
    assert first > math.log(VOCAB) - 0.5
    assert loss.item() < 0.3 * first, (first, loss.item())


def test_goldfinch_init_follows_the_paper():
    cfg = tiny_config("goldfinch", n_layer=6)
    model = build_model(cfg)
    assert model.emb.weight.abs().max() <= 1e-4
    head = model.head.weight
    gain = 0.5 * math.sqrt(cfg.vocab_size / cfg.n_embd)
    gram = head.T @ head / gain**2  # orthogonal columns (vocab > width)
    torch.testing.assert_close(gram, torch.eye(cfg.n_embd), atol=1e-4, rtol=0)
    for i, block in enumerate(model.blocks):
        assert block.att.output.weight.abs().sum() == 0, f"block {i} time-mix output not zero"
        assert block.ffn.value.weight.abs().sum() == 0, f"block {i} channel-mix output not zero"
        expected = ((i + 1) / cfg.n_layer) ** 0.7
        torch.testing.assert_close(block.att.ln_x.weight, torch.full_like(block.att.ln_x.weight, expected))
    decay = model.blocks[0].att.decay_base
    assert decay[0].item() == pytest.approx(-6.0) and decay[-1].item() == pytest.approx(-1.0)
    assert not hasattr(model.blocks[0].att, "bonus")  # Finch-C2 has no bonus term


def test_finch_baseline_has_bonus_and_gate_and_no_gold():
    model = build_model(tiny_config("finch"))
    assert all(b.kind == "finch" for b in model.blocks) and model.kv_compression is None
    att = model.blocks[2].att
    assert att.bonus.shape == (4, 16) and att.bonus.abs().sum() > 0 and hasattr(att, "gate")


def test_model_runs_in_bfloat16():
    model = tiny_model("goldfinch", cache_dtype="bfloat16").to(torch.bfloat16)
    logits, state = model(torch.randint(0, VOCAB, (2, 9)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert state.blocks[0].wkv.dtype == torch.float32


@pytest.mark.parametrize("arch", ARCHS)
def test_activation_checkpointing_gives_the_same_gradients(arch):
    model = tiny_model(arch)
    idx = torch.randint(0, VOCAB, (2, 13))
    lm_loss(model, idx).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.grad_ckpt = True
    lm_loss(model, idx).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], atol=1e-6, rtol=1e-5, msg=n)


def test_return_hidden_is_what_the_head_multiplies():
    model = tiny_model("goldfinch")
    idx = torch.randint(0, VOCAB, (1, 9))
    logits, _ = model(idx)
    hidden, _ = model(idx, return_hidden=True)
    torch.testing.assert_close(model.head(hidden), logits)


@pytest.mark.parametrize("arch", ["goldfinch", "finch", "llama"])
def test_targets_give_the_cross_entropy_of_the_logits(arch):
    model = tiny_model(arch)
    idx, targets = torch.randint(0, VOCAB, (2, 9)), torch.randint(0, VOCAB, (2, 9))
    logits, _ = model(idx)
    loss, _ = model(idx, targets=targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1)))


@pytest.mark.parametrize("arch", ["goldfinch", "llama"])
def test_training_keeps_keys_at_full_precision(arch):
    """The bf16 cache format is for inference: a training forward must not round through it."""
    model = tiny_model(arch, cache_dtype="bfloat16").double()
    idx = torch.randint(0, VOCAB, (1, 12))
    model.train()
    _, st = model(idx)
    stored = st.compressed if arch == "goldfinch" else st.blocks[0].k
    assert stored.dtype == torch.float64
    model.eval()
    _, st = model(idx)
    stored = st.compressed if arch == "goldfinch" else st.blocks[0].k
    assert stored.dtype == torch.bfloat16


@pytest.mark.parametrize("arch", ["goldfinch", "finch"])
def test_triton_wkv6_backend_gives_the_same_model_outputs_and_gradients(arch, monkeypatch):
    """The model picks the WKV6 backend up transparently (Triton here under TRITON_INTERPRET)."""
    model = tiny_model(arch, n_layer=3)
    idx = torch.randint(0, VOCAB, (2, 11))
    grads = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("GOLDFINCH_WKV_BACKEND", backend)
        model.zero_grad()
        loss = lm_loss(model, idx)
        loss.backward()
        grads[backend] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(grads["triton"][0], grads["torch"][0], atol=1e-5, rtol=1e-5)
    for name, g in grads["torch"][1].items():
        torch.testing.assert_close(grads["triton"][1][name], g, atol=1e-5, rtol=1e-4, msg=name)
