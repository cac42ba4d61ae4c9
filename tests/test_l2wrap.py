"""The L2Wrap logit penalty (plain loss, and fused into the chunked cross-entropy with torch and
Triton rows) against the reference's autograd function, restated here."""
import pytest
import torch
import torch.nn.functional as F

from kernels import fused_linear_cross_entropy
from pipeline.config import load_run_config
from pipeline.training.loss import lm_loss

from test_fused_ce import problem, triton_rows  # noqa: F401  (fixture)


class ReferenceL2Wrap(torch.autograd.Function):
    """As the reference: loss passes through; the backward adds max·1e-4/(B·T) at each position's
    argmax. The GoldFinch reference returns that unscaled; RWKV-LM's corrected form (and ours)
    multiplies it by the incoming gradient: the same at 1, and the tests at other scales check
    the corrected form."""

    @staticmethod
    def forward(ctx, loss, y):
        ctx.save_for_backward(y)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        y = ctx.saved_tensors[0]
        factor = 1e-4 / (y.shape[0] * y.shape[1])
        maxx, ids = torch.max(y, -1, keepdim=True)
        gy = torch.zeros_like(y)
        gy.scatter_(-1, ids, maxx * factor)
        return grad_output, gy * grad_output


def reference_grads(hidden, weight, targets, b, t, scale, ignore_index=-100):
    """Grads of scale·L2Wrap(CE(h W^T)) in fp32, logits viewed as [B, T, V]."""
    h = hidden.detach().float().requires_grad_()
    w = weight.detach().float().requires_grad_()
    logits = (h @ w.t()).view(b, t, -1)
    loss = F.cross_entropy(logits.view(b * t, -1), targets, ignore_index=ignore_index)
    (ReferenceL2Wrap.apply(loss, logits) * scale).backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("scale", [1.0, 0.125])
def test_plain_loss_gradient_is_the_reference(scale):
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, 5, 40, generator=g) * 4).requires_grad_()
    targets = torch.randint(0, 40, (2, 5), generator=g)
    (lm_loss(logits, targets, l2wrap=1e-4) * scale).backward()
    ours = logits.grad.clone()
    logits.grad = None
    loss = F.cross_entropy(logits.view(10, 40), targets.view(10))
    (ReferenceL2Wrap.apply(loss, logits) * scale).backward()
    assert torch.allclose(ours, logits.grad, rtol=1e-6, atol=1e-9)
    assert lm_loss(logits, targets, l2wrap=1e-4).item() == pytest.approx(loss.item(), rel=1e-7)
    # the penalty is there: without it the top logits get a different gradient
    logits.grad = None
    (lm_loss(logits, targets, l2wrap=0.0) * scale).backward()
    assert not torch.allclose(ours, logits.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("n, chunk, ignore_every, scale", [(36, 8, 5, 1.0), (12, None, 0, 0.25)])
def test_fused_gradient_is_the_reference(backend, n, chunk, ignore_every, scale, triton_rows):  # noqa: F811
    hidden, weight, targets = problem(n, 24, 301, ignore_every=ignore_every)
    hidden = (hidden.detach() * 3).requires_grad_()  # larger logits: a penalty worth seeing
    loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=chunk, backend=backend,
                                      l2wrap=1e-4)
    (loss * scale).backward()
    assert bool(triton_rows) == (backend == "triton")
    want_loss, want_h, want_w = reference_grads(hidden, weight, targets, 2, n // 2, scale)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    assert torch.allclose(hidden.grad, want_h, rtol=1e-4, atol=1e-8)
    assert torch.allclose(weight.grad, want_w, rtol=1e-4, atol=1e-8)


def test_triton_rows_find_the_max_across_vocab_blocks(triton_rows):  # noqa: F811
    """Vocab wider than one Triton block (4096): the max can sit in any block, ties keep the first."""
    from kernels.fused_ce import triton_ce
    from wkv6_helpers import triton_device

    logits = torch.randn(5, 9000, generator=torch.Generator().manual_seed(1))
    for row, col in enumerate((3, 4500, 8999, 4096)):
        logits[row, col] = 9.0
    logits[4, 100] = logits[4, 5000] = 9.0  # a tie across blocks
    logits = logits.to(triton_device())
    targets = torch.tensor([0, 1, 2, 3, 4], device=logits.device)
    losses = torch.empty(5, device=logits.device)
    top = torch.empty(5, device=logits.device)
    where = torch.empty(5, dtype=torch.int64, device=logits.device)
    want = logits.clone()
    triton_ce.ce_rows_triton(logits, targets, losses, -100, False, top, where)
    assert triton_rows
    assert where.tolist() == [3, 4500, 8999, 4096, 100]
    assert top.tolist() == want.max(dim=1).values.tolist()


def test_no_penalty_without_gradients_and_l2wrap_validated():
    hidden, weight, targets = problem(6, 8, 50)
    with torch.no_grad():
        a = fused_linear_cross_entropy(hidden, weight, targets, l2wrap=1e-4)
    assert a.item() == pytest.approx(fused_linear_cross_entropy(hidden, weight, targets).item())
    with pytest.raises(ValueError, match="l2wrap"):
        fused_linear_cross_entropy(hidden, weight, targets, l2wrap=-1.0)
    with pytest.raises(ValueError, match="train.l2wrap"):
        load_run_config(None, ["train.l2wrap=-1e-4"])
    assert load_run_config(None, []).train.l2wrap == 1e-4


def test_the_trainer_hands_the_factor_to_the_model():
    from pipeline.training.phase_switch import new_model

    cfg = load_run_config(None, ["model.vocab_size=64", "model.n_layer=3", "model.n_embd=64",
                                 "model.head_size=32", "train.l2wrap=3e-4"])
    assert new_model(cfg).l2wrap == 3e-4


@pytest.mark.parametrize("fused", [False, True])
def test_the_models_training_loss_carries_the_penalty(fused):
    """model(idx, targets=...) with model.l2wrap set has lm_loss's gradient, plain or fused."""
    from model_helpers import tiny_model

    model = tiny_model("goldfinch", n_layer=3)
    model.fused_ce, model.l2wrap = fused, 1e-2
    idx = torch.randint(0, 97, (2, 17))
    loss, _ = model(idx[:, :-1], targets=idx[:, 1:])
    loss.backward()
    got = model.head.weight.grad.clone()
    model.zero_grad()
    logits, _ = model(idx[:, :-1])
    lm_loss(logits, idx[:, 1:], l2wrap=1e-2).backward()
    torch.testing.assert_close(got, model.head.weight.grad, atol=1e-6, rtol=1e-4)
    model.zero_grad()
    model.l2wrap = 0.0
    model(idx[:, :-1], targets=idx[:, 1:])[0].backward()
    assert not torch.allclose(got, model.head.weight.grad, atol=1e-6)  # the penalty did something
