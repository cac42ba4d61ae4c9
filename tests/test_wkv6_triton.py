"""Triton WKV6 (interpreted on CPU, compiled on CUDA) against the per-token reference: outputs
and all gradients."""
import pytest
import torch

from kernels.wkv6 import wkv6_chunked, wkv6_naive
from kernels.wkv6.triton_autograd import wkv6_triton
from wkv6_helpers import (NAMES, assert_scaled_close, compare, make_inputs, outputs_and_grads,
                          reference)

gpu = pytest.mark.gpu


@pytest.mark.parametrize("b, t, h, kk, vv, chunk", [
    (1, 1, 1, 16, 16, 16),    # a single token
    (2, 7, 2, 16, 16, 16),    # T < chunk
    (2, 37, 2, 16, 32, 16),   # odd T over three chunks, V != K
    (1, 40, 1, 32, 16, 32),   # head size 32, partial last chunk
    (2, 33, 1, 16, 16, 64),   # one chunk, three sub-chunks, the last one almost empty
])
@pytest.mark.parametrize("bonus", [False, True])
def test_fp32_matches_reference_with_all_gradients(b, t, h, kk, vv, chunk, bonus):
    compare(make_inputs(b, t, h, kk, vv, bonus=bonus, seed=t + kk), tol=1e-4, chunk=chunk)


def test_without_initial_state_gradients_still_flow():
    compare(make_inputs(2, 21, 2, 16, 16, bonus=True, with_state=False), tol=1e-4, chunk=16)


@pytest.mark.parametrize("w_shift, w_scale", [(3.0, 0.5), (5.0, 0.3), (-8.0, 1.0), (0.0, 2.5)])
def test_strong_and_weak_decays_stay_finite_and_exact(w_shift, w_scale):
    """w ~ +3..+5 means per-step decays down to exp(-exp(5)) ~ 1e-65: cumulative decays underflow.
    (dw carries fp32 rounding times exp(w), so its error grows with w; far beyond trained ranges.)"""
    args = make_inputs(1, 35, 2, 16, 16, bonus=True, w_shift=w_shift, w_scale=w_scale, seed=5)
    compare(args, tol=3e-3, chunk=32)


def test_bf16_inputs_accumulate_in_fp32():
    args = make_inputs(2, 30, 1, 16, 16, bonus=True, dtype=torch.bfloat16, seed=3)
    got = outputs_and_grads(lambda *a: wkv6_triton(*a, chunk_size=16), args)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    assert all(g.dtype == a.dtype for g, a in zip(got[2:], args))
    for name, a, b in zip(NAMES, got, reference(args)):
        assert_scaled_close(a, b, 3e-2, name)


def test_only_the_final_state_carries_gradient():
    args = make_inputs(1, 19, 1, 16, 16, bonus=True, seed=7)
    _, s = wkv6_triton(*args, chunk_size=16)
    got = torch.autograd.grad(s.square().sum(), args)
    as64 = [a.detach().double().requires_grad_() for a in args]
    _, s0 = wkv6_naive(*as64)
    want = torch.autograd.grad(s0.square().sum(), as64, allow_unused=True)
    for name, a, b in zip(NAMES[2:], got, want):
        assert_scaled_close(a, torch.zeros_like(a) if b is None else b, 1e-4, name)


@pytest.mark.parametrize("split", [1, 16, 23])
def test_two_halves_with_carried_state_equal_whole(split):
    r, k, v, w, u, s = [x.detach() for x in make_inputs(2, 40, 2, 16, 16, seed=11)]
    y, s_end = wkv6_triton(r, k, v, w, u, s, chunk_size=16)
    ya, sa = wkv6_triton(r[:, :split], k[:, :split], v[:, :split], w[:, :split], u, s, chunk_size=16)
    yb, sb = wkv6_triton(r[:, split:], k[:, split:], v[:, split:], w[:, split:], u, sa, chunk_size=16)
    torch.testing.assert_close(torch.cat([ya, yb], dim=1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sb, s_end, rtol=1e-5, atol=1e-5)


def test_rejects_unsupported_chunk_and_head_size():
    r, k, v, w, u, s = make_inputs(1, 4, 1, 16, 16)
    with pytest.raises(ValueError, match="chunk_size"):
        wkv6_triton(r, k, v, w, u, s, chunk_size=48)
    with pytest.raises(ValueError, match="head size"):
        wkv6_triton(r[..., :8], k[..., :8], v, w[..., :8], None, None)


# ---- GPU checks: real compiled kernels at training sizes (skipped without CUDA) ----

@gpu
@pytest.mark.parametrize("kk", [64, 128])
def test_gpu_fp32_matches_fp64_chunked(kk):
    args = make_inputs(2, 333, 2, kk, kk, bonus=True, device="cuda", seed=kk)
    compare(args, tol=2e-4, chunk=64, ref_fn=wkv6_chunked)


@gpu
def test_gpu_long_bf16_sequence_against_fp32_chunked():
    args = make_inputs(2, 4096, 4, 64, 64, bonus=False, dtype=torch.bfloat16, device="cuda",
                       w_shift=-1.0, seed=9)
    got = outputs_and_grads(lambda *a: wkv6_triton(*a), args)
    as32 = [None if a is None else a.detach().float().requires_grad_() for a in args]
    want = outputs_and_grads(wkv6_chunked, as32)
    names = [n for n, a in zip(NAMES, [0, 0, *args]) if a is not None]
    for name, a, b in zip(names, got, want):
        assert_scaled_close(a, b, 5e-2, name)


@gpu
def test_gpu_strong_decays_stay_finite():
    args = make_inputs(1, 1000, 2, 64, 64, bonus=True, w_shift=3.0, w_scale=1.0, device="cuda")
    compare(args, tol=3e-3, chunk=64, ref_fn=wkv6_chunked)
