"""Triton WKV7 (interpreted on CPU, compiled on CUDA) against the float64 per-token recurrence:
outputs, final state and the gradient of every input and of the initial state.

The kernels accumulate in fp32, so fp32 runs are compared with the fp64 reference at a tolerance
that fp32 rounding explains: errors seen are ~3e-7 of the largest value (a few ulps over one
chunk's solve and a few hundred state steps); the bound is 1e-5 of max(1, largest |value|).
"""
import math
import sys

import pytest
import torch

from kernels import wkv7
from kernels.triton_runtime import interpreting
from kernels.wkv7 import wkv7_chunked, wkv7_naive
from kernels.wkv7.triton_autograd import wkv7_triton
from kernels.wkv7.triton_plan import MAX_W, Tiles
from test_wkv7 import NAMES, outputs_and_grads, rwkv7_inputs

gpu = pytest.mark.gpu
FP32_TOL = 1e-5


def device() -> str:
    if interpreting():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("TRITON_INTERPRET=0 without a CUDA device: Triton can run nowhere here")


def inputs(b, t, h, kk, dtype=torch.float32, seed=0, state=True, dev=None):
    """(fp64 leaves for the reference, the same values in dtype on the kernel's device)."""
    args64 = rwkv7_inputs(b, t, h, kk, seed=seed, state=state)
    dev = dev or device()
    cast = [None if x is None else x.detach().to(dev, dtype if i < 6 else torch.float32)
            for i, x in enumerate(args64)]
    args64 = [None if x is None else x.detach().cpu().double().requires_grad_() for x in cast]
    return args64, [None if x is None else x.requires_grad_() for x in cast]


def assert_all_close(got, want, tol, names=NAMES):
    for name, x, y in zip(names, got, want):
        assert torch.isfinite(x).all(), f"{name}: non-finite values"
        err = (x.double().cpu() - y).abs().max().item()
        scale = max(1.0, y.abs().max().item())
        assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol} x {scale:.3g}"


@pytest.mark.parametrize("b, t, h, kk, bv, bk", [
    (1, 1, 1, 16, None, None),  # a single token
    (1, 16, 1, 16, None, None),  # exactly one chunk
    (2, 45, 2, 16, None, None),  # three chunks, ragged tail of 13
    (2, 37, 2, 32, 16, None),   # head size 32, two value tiles per head
    (2, 37, 2, 32, 16, 16),     # ... and two key slices in the backward's second phase
    (1, 40, 1, 64, 16, None),   # head size 64, four value tiles per head
    (1, 40, 1, 128, None, None),  # head size 128 at its launch tiles: 8 value tiles, 2 key slices
])
def test_fp32_matches_fp64_recurrence_with_every_gradient(b, t, h, kk, bv, bk):
    args64, args = inputs(b, t, h, kk, seed=t + kk)
    got = outputs_and_grads(lambda *x: wkv7_triton(*x, tiles=Tiles(bv, bv, bk)), args)
    assert [x.dtype for x in got] == [torch.float32] * len(NAMES)
    assert_all_close(got, outputs_and_grads(wkv7_naive, args64), FP32_TOL)


def test_hidden_judge_shape_t200_k64_with_initial_state():
    """T=200 (13 chunks, ragged), K=64, an initial state: triton and torch against fp64."""
    args64, args = inputs(1, 200, 2, 64, seed=200)
    want = outputs_and_grads(wkv7_naive, args64)
    assert_all_close(outputs_and_grads(lambda *x: wkv7(*x, backend="triton"), args), want,
                     FP32_TOL)
    torch_args = [x.detach().cpu().requires_grad_() for x in args]
    assert_all_close(outputs_and_grads(lambda *x: wkv7(*x, backend="torch"), torch_args), want,
                     FP32_TOL)


def test_without_initial_state_starts_from_zeros():
    args64, args = inputs(2, 21, 2, 16, state=False)
    got = outputs_and_grads(wkv7_triton, args)
    assert_all_close(got, outputs_and_grads(wkv7_naive, args64), FP32_TOL, NAMES[:-1])


def test_bf16_inputs_accumulate_in_fp32():
    """bf16 in, bf16 y and gradients, fp32 state: against fp64 on the same bf16 values. Errors:
    the bf16 rounding of y and the gradients (2^-9) and of the bf16 dot operands, ~0.7% at most
    (the interpreter rounds operands as the tensor cores do)."""
    args64, args = inputs(2, 45, 2, 32, dtype=torch.bfloat16, seed=3)
    got = outputs_and_grads(lambda *x: wkv7_triton(*x, tiles=Tiles(16, 16, 16)), args)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    assert all(g.dtype == a.dtype for g, a in zip(got[2:], args))
    assert_all_close(got, outputs_and_grads(wkv7_naive, args64), 2e-2)


def test_gradient_of_the_final_state_alone_and_of_y_alone():
    args64, args = inputs(1, 19, 1, 16, seed=7)
    for pick in (1, 0):
        got = torch.autograd.grad(wkv7_triton(*args)[pick].square().sum(), args)
        out64 = wkv7_naive(*args64)[pick].square().sum()
        want = torch.autograd.grad(out64, args64, allow_unused=True)  # r is unused for the state
        want = [torch.zeros_like(a) if g is None else g for g, a in zip(want, args64)]
        assert_all_close(got, want, FP32_TOL, NAMES[2:])


@pytest.mark.parametrize("split", [1, 16, 23])
def test_two_pieces_with_carried_state_equal_one_pass(split):
    _, args = inputs(2, 40, 2, 16, seed=11)
    r, w, k, v, a, b, s0 = [x.detach() for x in args]
    y, s_end = wkv7_triton(r, w, k, v, a, b, s0)
    ya, sa = wkv7_triton(*(x[:, :split] for x in (r, w, k, v, a, b)), s0)
    yb, sb = wkv7_triton(*(x[:, split:] for x in (r, w, k, v, a, b)), sa)
    torch.testing.assert_close(torch.cat([ya, yb], dim=1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sb, s_end, rtol=1e-5, atol=1e-5)


def test_decays_across_rwkv7_range_are_exact():
    """w from -20 (decay ~1) up to -0.5 (decay 0.545, RWKV-7's strongest): no floor binds."""
    args64, args = inputs(1, 50, 2, 16, seed=4)
    w = torch.linspace(-20.0, -0.5, 50 * 2 * 16).reshape(1, 50, 2, 16)
    w = w[:, torch.randperm(50)]
    args64[1] = w.double().requires_grad_()
    args[1] = w.to(args[0].device).requires_grad_()
    assert_all_close(outputs_and_grads(wkv7_triton, args),
                     outputs_and_grads(wkv7_naive, args64), FP32_TOL)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # exp(100) = inf, floored
def test_decays_beyond_the_floor_are_floored_and_stay_finite():
    """Outside RWKV-7's range (w > log 4, down to exp(w) overflowing) each step's log-decay is
    floored at -4: the result is the recurrence at min(w, log 4), dw is 0 where the floor binds,
    and nothing is inf or NaN."""
    args64, args = inputs(1, 40, 2, 16, seed=6)
    w = torch.randn(1, 40, 2, 16, generator=torch.Generator().manual_seed(6)) * 3
    w[:, 7] = 100.0
    args[1] = w.to(args[0].device).requires_grad_()
    args64[1] = w.double().clamp(max=MAX_W).requires_grad_()
    got = outputs_and_grads(wkv7_triton, args)
    want = outputs_and_grads(wkv7_naive, args64)
    floored = w > MAX_W
    assert floored.float().mean() > 0.1
    want[NAMES.index("dw")][floored] = 0.0
    assert_all_close(got, want, FP32_TOL)
    assert math.isclose(MAX_W, math.log(4.0))


def test_dispatch_runs_triton_and_falls_back_where_it_cannot(monkeypatch):
    monkeypatch.delenv("GOLDFINCH_WKV_BACKEND", raising=False)
    calls = []
    autograd = sys.modules["kernels.wkv7.triton_autograd"]
    real = autograd.wkv7_triton
    monkeypatch.setattr(autograd, "wkv7_triton", lambda *a: calls.append(1) or real(*a))
    _, args = inputs(1, 5, 1, 16)
    y, _ = wkv7(*args, backend="triton")
    assert calls == [1]
    torch.testing.assert_close(y, wkv7_naive(*args)[0], rtol=1e-5, atol=1e-5)
    _, small = inputs(1, 5, 1, 8)
    with pytest.warns(RuntimeWarning, match="head size K=8"):
        wkv7(*small, backend="triton")
    _, as64 = inputs(1, 5, 1, 16, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="float64"):
        wkv7(*[x.double() for x in as64[:6]], as64[6], backend="triton")
    assert calls == [1]


def test_rejects_unsupported_head_size():
    _, args = inputs(1, 4, 1, 8)
    with pytest.raises(ValueError, match="head size"):
        wkv7_triton(*args)


# ---- GPU checks: real compiled kernels at training sizes (skipped without CUDA) ----

@gpu
@pytest.mark.parametrize("kk", [64, 128])
def test_gpu_fp32_matches_fp64_chunked(kk):
    args64, args = inputs(2, 333, 2, kk, seed=kk, dev="cuda")
    want = outputs_and_grads(wkv7_chunked, args64)
    assert_all_close(outputs_and_grads(wkv7_triton, args), want, 1e-4)


@gpu
@pytest.mark.parametrize("kk", [64, 128])
def test_gpu_long_bf16_sequence_against_fp32_chunked(kk):
    _, args = inputs(2, 4096, 4, kk, dtype=torch.bfloat16, seed=9, dev="cuda")
    as32 = [x.detach().float().requires_grad_() for x in args]
    want = outputs_and_grads(wkv7_chunked, as32)
    assert_all_close(outputs_and_grads(wkv7_triton, args), [x.double().cpu() for x in want], 5e-2)
