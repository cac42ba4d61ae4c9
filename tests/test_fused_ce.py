"""Fused linear + cross-entropy (Triton interpreted on CPU or compiled on CUDA, and the torch
rows) vs plain CE."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from kernels import fused_linear_cross_entropy, triton_runtime
from kernels.fused_ce import triton_ce
from kernels.fused_ce.chunked_torch import ce_rows_torch
from wkv6_helpers import triton_device

fused_ce_module = importlib.import_module("kernels.fused_ce")


@pytest.fixture
def triton_rows(monkeypatch):
    """Counts the Triton row-kernel launches, so a test fails if it ran the torch rows instead."""
    launches = []
    real = triton_ce.ce_rows_triton
    monkeypatch.setattr(triton_ce, "ce_rows_triton", lambda *a: launches.append(1) or real(*a))
    return launches


def problem(n, d, vocab, dtype=torch.float32, ignore_every=0, ignore_index=-100, device=None):
    device = device or triton_device()
    g = torch.Generator().manual_seed(n * 7 + vocab)
    hidden = torch.randn(n, d, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(vocab, d, generator=g) / d ** 0.5).to(device, dtype).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g)
    if ignore_every:
        targets[::ignore_every] = ignore_index
    return hidden, weight, targets.to(device)


def reference(hidden, weight, targets, ignore_index=-100):
    """Plain CE on full fp32 logits (from the same, possibly bf16-rounded, values)."""
    h = hidden.detach().float().requires_grad_()
    w = weight.detach().float().requires_grad_()
    loss = F.cross_entropy(h @ w.t(), targets, ignore_index=ignore_index)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def fused(hidden, weight, targets, **kw):
    loss = fused_linear_cross_entropy(hidden, weight, targets, **kw)
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("n, chunk, ignore_every", [(37, 8, 5), (37, 64, 0), (16, 16, 3), (5, None, 2)])
def test_fp32_loss_and_grads_match_plain_cross_entropy(backend, n, chunk, ignore_every,
                                                       triton_rows):
    hidden, weight, targets = problem(n, 24, 301, ignore_every=ignore_every)
    got = fused(hidden, weight, targets, chunk_size=chunk, backend=backend)
    assert bool(triton_rows) == (backend == "triton")
    want = reference(hidden, weight, targets)
    for name, a, b in zip(("loss", "grad_hidden", "grad_weight"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_accumulate_in_fp32(backend, dtype, triton_rows):
    hidden, weight, targets = problem(29, 32, 500, dtype=dtype, ignore_every=4)
    loss, gh, gw = fused(hidden, weight, targets, chunk_size=8, backend=backend)
    assert bool(triton_rows) == (backend == "triton")
    assert gh.dtype == gw.dtype == dtype and loss.dtype == torch.float32
    want = reference(hidden, weight, targets)
    torch.testing.assert_close(loss, want[0], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(gh.float(), want[1], rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(gw.float(), want[2], rtol=2e-2, atol=2e-3)


def test_custom_ignore_index_and_upstream_gradient_scale():
    hidden, weight, targets = problem(21, 16, 97, ignore_every=3, ignore_index=7)
    loss = fused_linear_cross_entropy(hidden, weight, targets, ignore_index=7, chunk_size=4)
    (3.0 * loss).backward()
    want = reference(hidden, weight, targets, ignore_index=7)
    torch.testing.assert_close(loss.detach(), want[0])
    torch.testing.assert_close(hidden.grad, 3.0 * want[1])
    torch.testing.assert_close(weight.grad, 3.0 * want[2])


def test_only_weight_requires_grad_and_no_grad_mode():
    hidden, weight, targets = problem(13, 16, 50)
    hidden = hidden.detach()
    loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=5)
    loss.backward()
    torch.testing.assert_close(weight.grad, reference(hidden, weight, targets)[2])
    with torch.no_grad():
        again = fused_linear_cross_entropy(hidden, weight, targets, chunk_size=5)
    assert not again.requires_grad
    torch.testing.assert_close(again, loss.detach())


def test_auto_rows_use_torch_on_cpu_unless_interpreting(monkeypatch):
    monkeypatch.setattr(fused_ce_module, "interpreting", lambda: False)
    assert fused_ce_module._rows_fn(torch.device("cpu"), "auto") is ce_rows_torch
    monkeypatch.setattr(fused_ce_module, "interpreting", lambda: True)
    assert fused_ce_module._rows_fn(torch.device("cpu"), "auto").__name__ == "ce_rows_triton"


def test_large_logits_do_not_overflow(triton_rows):
    hidden, weight, targets = problem(9, 8, 40)
    with torch.no_grad():
        weight.mul_(300.0)  # logits in the thousands
    got = fused(hidden, weight, targets, chunk_size=4, backend="triton")
    assert triton_rows
    want = reference(hidden, weight, targets)
    assert all(torch.isfinite(x).all() for x in got)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("args, needle", [
    (dict(weight=torch.zeros(10, 5)), "weight"),
    (dict(targets=torch.zeros(4, dtype=torch.long)), "targets has shape"),
    (dict(targets=torch.full((6,), 10)), "targets outside"),
    (dict(weight=torch.zeros(10, 4, dtype=torch.float64)), "weight has dtype"),
    (dict(backend="magic"), "unknown backend"),
])
def test_bad_inputs_are_named(args, needle):
    call = dict(hidden=torch.zeros(6, 4), weight=torch.zeros(10, 4),
                targets=torch.zeros(6, dtype=torch.long))
    call.update(args)
    with pytest.raises(ValueError, match=needle):
        fused_linear_cross_entropy(**call)


def test_triton_refused_without_interpreter_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(triton_runtime, "_warned", set())
    monkeypatch.setattr(fused_ce_module, "interpreting", lambda: True)
    monkeypatch.setattr(fused_ce_module, "check_runnable",
                        lambda *a: (_ for _ in ()).throw(triton_runtime.TritonUnavailable("no")))
    with pytest.warns(RuntimeWarning, match="torch row function"):
        assert fused_ce_module._rows_fn(torch.device("cpu"), "auto") is ce_rows_torch
    with pytest.raises(triton_runtime.TritonUnavailable):
        fused_ce_module._rows_fn(torch.device("cpu"), "triton")


@pytest.mark.gpu
def test_gpu_bf16_large_vocab_matches_and_saves_memory(triton_rows):
    hidden, weight, targets = problem(4096, 512, 65536, dtype=torch.bfloat16, ignore_every=11,
                                      device="cuda")
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    got = fused(hidden, weight, targets)  # auto: must pick the Triton rows on CUDA
    assert triton_rows, "the fused CE on CUDA did not launch the Triton row kernel"
    fused_peak = torch.cuda.max_memory_allocated() - base
    hidden.grad = weight.grad = None
    torch.cuda.reset_peak_memory_stats()
    plain = F.cross_entropy((hidden @ weight.t()).float(), targets)
    plain.backward()
    plain_peak = torch.cuda.max_memory_allocated() - base
    assert fused_peak < plain_peak / 2
    want = reference(hidden, weight, targets)
    torch.testing.assert_close(got[0], want[0], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(got[1].float(), want[1], rtol=5e-2, atol=1e-3)
    torch.testing.assert_close(got[2].float(), want[2], rtol=5e-2, atol=1e-3)
