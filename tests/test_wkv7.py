"""WKV7: the naive loop against the formula, the chunked torch path against the naive loop
(outputs, final state and every gradient), dtypes, state carry, validation and dispatch."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import wkv7
from kernels.wkv7 import wkv7_chunked, wkv7_naive

NAMES = ["y", "state", "dr", "dw", "dk", "dv", "da", "db", "dstate"]


def rwkv7_inputs(b, t, h, kk, dtype=torch.float64, seed=0, state=True):
    """RWKV-7-shaped inputs: decay exp(-exp(w)) in (0.545, 1), a = -kk, b = kk * alpha with kk
    unit-norm per head and alpha in (0, 1); a random initial state. All require grad."""
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    r, k, v = mk(b, t, h, kk), mk(b, t, h, kk), mk(b, t, h, kk)
    w = torch.log(math.exp(-0.5) * torch.sigmoid(mk(b, t, h, kk) * 2))
    unit = F.normalize(mk(b, t, h, kk), dim=-1)
    alpha = torch.rand(b, t, h, kk, generator=g, dtype=torch.float64)
    s0 = mk(b, h, kk, kk).to(torch.float64 if dtype == torch.float64 else torch.float32)
    seq = [x.to(dtype).requires_grad_() for x in (r, w, k, v, -unit, unit * alpha)]
    return seq + [s0.requires_grad_() if state else None]


def outputs_and_grads(fn, args, seed=1):
    """y, final state, and the grads of a random linear function of both w.r.t. every input."""
    y, s = fn(*args)
    g = torch.Generator().manual_seed(seed)
    loss = ((y * torch.randn(y.shape, generator=g).to(y.dtype)).sum()
            + (s * torch.randn(s.shape, generator=g).to(s.dtype)).sum())
    live = [a for a in args if a is not None]
    return [y, s, *torch.autograd.grad(loss, live)]


def einsum_loop(r, w, k, v, a, b, state):
    """The formula as written, element by element in einsum form, independent of wkv7_naive:
    S_t[i,j] = d_t[i] S[i,j] + b_t[i] sum_m a_t[m] S[m,j] + k_t[i] v_t[j];
    y_t[j] = sum_i r_t[i] S_t[i,j]."""
    s, ys = state.clone(), []
    d = torch.exp(-torch.exp(w))
    for t in range(r.shape[1]):
        s = (torch.einsum("bhi,bhij->bhij", d[:, t], s)
             + torch.einsum("bhi,bhm,bhmj->bhij", b[:, t], a[:, t], s)
             + torch.einsum("bhi,bhj->bhij", k[:, t], v[:, t]))
        ys.append(torch.einsum("bhi,bhij->bhj", r[:, t], s))
    return torch.stack(ys, dim=1), s


def test_naive_is_the_formula_and_reads_the_updated_state():
    r, w, k, v, a, b, s0 = [x.detach() for x in rwkv7_inputs(2, 9, 3, 5)]
    y, s = wkv7_naive(r, w, k, v, a, b, s0)
    y_ref, s_ref = einsum_loop(r, w, k, v, a, b, s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)
    # one token by hand: y_0 = r_0 S_1, not r_0 S_0
    s1 = (torch.exp(-torch.exp(w[:, 0]))[..., None] * s0
          + b[:, 0, :, :, None] * torch.einsum("bhm,bhmj->bhj", a[:, 0], s0)[:, :, None, :]
          + k[:, 0, :, :, None] * v[:, 0, :, None, :])
    y0 = torch.einsum("bhi,bhij->bhj", r[:, 0], s1)
    torch.testing.assert_close(y[:, 0], y0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b, t, h, kk, chunk", [(2, 45, 2, 8, 16), (1, 33, 3, 4, 8), (1, 1, 1, 4, 16),
                                                (2, 16, 1, 8, 16), (1, 70, 2, 16, 32)])
def test_chunked_matches_naive_in_fp64_with_every_gradient(b, t, h, kk, chunk):
    args = rwkv7_inputs(b, t, h, kk, seed=t)
    got = outputs_and_grads(lambda *x: wkv7_chunked(*x, chunk_size=chunk), args)
    want = outputs_and_grads(wkv7_naive, args)
    assert len(got) == len(want) == len(NAMES)
    for name, x, y in zip(NAMES, got, want):
        assert x.dtype == torch.float64, name
        err = (x - y).abs().max().item()
        assert err <= 1e-10 * max(1.0, y.abs().max().item()), f"{name}: max error {err:.3g}"


def test_chunked_without_initial_state_starts_from_zeros():
    args = rwkv7_inputs(1, 20, 2, 8, state=False)
    got = outputs_and_grads(wkv7_chunked, args)
    want = outputs_and_grads(wkv7_naive, args)
    for name, x, y in zip(NAMES, got, want):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10, msg=name)


def test_extreme_decays_stay_finite_and_exact():
    """w from -20 (decay ~1) to +100 (exp(w) overflows: decay exactly 0) in one chunk: every
    factor is a window of log-decays <= 0, so nothing overflows and nothing is lost."""
    r, w, k, v, a, b, s0 = [x.detach() for x in rwkv7_inputs(1, 40, 2, 8)]
    w = torch.randn(w.shape, generator=torch.Generator().manual_seed(3), dtype=w.dtype) * 6
    w[:, 7] = 100.0
    want = outputs_and_grads(wkv7_naive, [x.requires_grad_() for x in (r, w, k, v, a, b, s0)])
    got = outputs_and_grads(wkv7_chunked, [x.detach().float().requires_grad_()
                                           for x in (r, w, k, v, a, b, s0)])
    for name, x, y in zip(NAMES, got, want):
        assert torch.isfinite(x).all(), name
        torch.testing.assert_close(x.double(), y, rtol=1e-4, atol=1e-4, msg=name)


def test_fp32_chunked_agrees_with_fp64_naive():
    args64 = rwkv7_inputs(1, 100, 2, 16, seed=5)
    args32 = [x.detach().float().requires_grad_() for x in args64]
    got = outputs_and_grads(wkv7_chunked, args32)
    want = outputs_and_grads(wkv7_naive, args64)
    for name, x, y in zip(NAMES, got, want):
        assert x.dtype == torch.float32, name
        err = (x.double() - y).abs().max().item()
        assert err <= 2e-6 * max(1.0, y.abs().max().item()), f"{name}: max error {err:.3g}"


@pytest.mark.parametrize("backend", ["naive", "torch"])
def test_bf16_inputs_give_bf16_y_and_fp32_state(backend):
    r, w, k, v, a, b, s0 = [x.detach() for x in rwkv7_inputs(1, 20, 2, 8, dtype=torch.float32)]
    half = [x.bfloat16() for x in (r, w, k, v, a, b)]
    y, s = wkv7(*half, s0, backend=backend)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    y_ref, s_ref = wkv7_naive(*(x.double() for x in half), s0.double())
    torch.testing.assert_close(y.double(), y_ref, atol=0.05, rtol=0.02)
    torch.testing.assert_close(s.double(), s_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("split", [1, 16, 23])
def test_two_pieces_with_carried_state_equal_one_pass(split):
    r, w, k, v, a, b, s0 = [x.detach() for x in rwkv7_inputs(2, 45, 2, 8)]
    y, s_end = wkv7(r, w, k, v, a, b, s0)
    first = [x[:, :split] for x in (r, w, k, v, a, b)]
    second = [x[:, split:] for x in (r, w, k, v, a, b)]
    ya, sa = wkv7(*first, s0)
    yb, sb = wkv7(*second, sa)
    torch.testing.assert_close(torch.cat([ya, yb], dim=1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sb, s_end, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad, needle", [
    (dict(r=torch.zeros(1, 5, 2)), "r must be"),
    (dict(k=torch.zeros(1, 5, 2, 3)), "k has shape"),
    (dict(a=torch.zeros(1, 4, 2, 4)), "a has shape"),
    (dict(b=torch.zeros(1, 5, 3, 4)), "b has shape"),
    (dict(state=torch.zeros(1, 2, 4, 5)), "state has shape"),
    (dict(w=torch.zeros(1, 5, 2, 4, dtype=torch.long)), "w must be a floating-point"),
    (dict(v=torch.zeros(1, 5, 2, 4, dtype=torch.float64)), "v has dtype"),
    (dict(backend="cuda-magic"), "unknown backend"),
])
def test_bad_inputs_are_named(bad, needle):
    args = {n: torch.zeros(1, 5, 2, 4) for n in ("r", "w", "k", "v", "a", "b")}
    args["state"] = None
    args.update(bad)
    with pytest.raises(ValueError, match=needle):
        wkv7(**args)


def test_chunk_size_must_be_a_power_of_two():
    x = torch.zeros(1, 5, 1, 4)
    with pytest.raises(ValueError, match="power of two"):
        wkv7_chunked(x, x, x, x, x, x, chunk_size=12)


def test_backend_selection_follows_the_shared_wkv_default(monkeypatch):
    """auto runs the chunked path on CPU tensors; naive runs the loop; a configured triton default
    runs the Triton path (its own dispatch is tested in test_wkv7_triton.py)."""
    monkeypatch.delenv("GOLDFINCH_WKV_BACKEND", raising=False)
    calls = []
    package = sys.modules["kernels.wkv7"]  # `kernels.wkv7` is the function; its package by name
    monkeypatch.setattr(package, "wkv7_naive", lambda *a: calls.append("naive") or (a[0], None))
    monkeypatch.setattr(package, "wkv7_chunked", lambda *a: calls.append("torch") or (a[0], None))
    monkeypatch.setattr(package, "_run_triton", lambda *a, **kw: calls.append("triton") or (0, 0))
    x = torch.zeros(1, 3, 1, 4)
    try:
        wkv7(x, x, x, x, x, x)
        kernels.set_wkv_backend("naive")
        wkv7(x, x, x, x, x, x)
        wkv7(x, x, x, x, x, x, backend="torch")
        kernels.set_wkv_backend("triton")
        wkv7(x, x, x, x, x, x)
    finally:
        kernels.set_wkv_backend(None)
    assert calls == ["torch", "naive", "torch", "triton"]
