"""The chunked torch WKV6 against the per-token reference: outputs, states and every gradient."""
import pytest
import torch

from kernels import wkv6
from kernels.wkv6 import wkv6_chunked, wkv6_naive


def inputs(b, t, h, kk, vv, w_scale=1.0, w_shift=0.0, bonus=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(b * 1000 + t * 10 + h)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    r, k = mk(b, t, h, kk), mk(b, t, h, kk)
    w = mk(b, t, h, kk) * w_scale + w_shift
    v = mk(b, t, h, vv)
    u = mk(h, kk) if bonus else None
    state = mk(b, h, kk, vv)
    return [x.requires_grad_() if x is not None else None for x in (r, k, v, w, u, state)]


def grads(fn, args):
    y, s = fn(*args)
    torch.manual_seed(1)
    loss = (y * torch.randn(y.shape, dtype=y.dtype)).sum() + (s * torch.randn(s.shape, dtype=s.dtype)).sum()
    live = [a for a in args if a is not None]
    return y, s, torch.autograd.grad(loss, live)


@pytest.mark.parametrize("b, t, h, kk, vv", [(1, 1, 1, 4, 4), (2, 7, 2, 8, 8), (2, 16, 1, 8, 4),
                                             (1, 33, 3, 8, 16), (2, 50, 2, 16, 8)])
@pytest.mark.parametrize("bonus", [False, True])
def test_chunked_matches_naive_with_gradients(b, t, h, kk, vv, bonus):
    args = inputs(b, t, h, kk, vv, bonus=bonus)
    y0, s0, g0 = grads(wkv6_naive, args)
    y1, s1, g1 = grads(wkv6_chunked, args)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(s1, s0)
    for a, b_ in zip(g1, g0):
        torch.testing.assert_close(a, b_)


@pytest.mark.parametrize("w_shift", [3.0, 4.5, -8.0])
def test_strong_and_weak_decays_stay_finite_and_exact(w_shift):
    """w = +4.5 means a decay of exp(-90) per step; cumulative decays underflow, never overflow."""
    args = inputs(2, 40, 2, 8, 8, w_scale=0.5, w_shift=w_shift)
    y0, s0, g0 = grads(wkv6_naive, args)
    y1, s1, g1 = grads(wkv6_chunked, args)
    assert torch.isfinite(y1).all() and all(torch.isfinite(g).all() for g in g1)
    torch.testing.assert_close(y1, y0)
    for a, b_ in zip(g1, g0):
        torch.testing.assert_close(a, b_)


@pytest.mark.parametrize("w_scale", [8.0, 40.0])
def test_wildly_mixed_decays_in_fp32_match_the_fp64_loop(w_scale):
    """Per-token log-decays from -1e-4 to -inf (w up to +100) inside one chunk: each window of
    decays is summed on its own, never as a difference of two large cumulative sums, so a
    state wiped by a huge decay leaves the later tokens exact even in fp32."""
    r, k, v, w, u, state = [x.detach() for x in inputs(2, 40, 2, 8, 8, w_scale=w_scale)]
    w[:, 5] = 100.0  # exp(w) overflows fp32: a decay of exactly zero
    y64, s64 = wkv6_naive(r, k, v, w, u, state)
    y32, s32 = wkv6_chunked(*(x.float() for x in (r, k, v, w, u, state)))
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double(), y64, atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(s32.double(), s64, atol=5e-5, rtol=1e-4)
    w32 = w.float().requires_grad_()
    out, _ = wkv6_chunked(r.float(), k.float(), v.float(), w32, u.float(), state.float())
    out.sum().backward()
    assert torch.isfinite(w32.grad).all()


@pytest.mark.parametrize("split", [1, 9, 16, 30])
def test_two_halves_with_carried_state_equal_whole(split):
    r, k, v, w, u, s = [x.detach() for x in inputs(2, 45, 2, 8, 8)]
    y, s_end = wkv6(r, k, v, w, u, s)
    ya, sa = wkv6(r[:, :split], k[:, :split], v[:, :split], w[:, :split], u, s)
    yb, sb = wkv6(r[:, split:], k[:, split:], v[:, split:], w[:, split:], u, sa)
    torch.testing.assert_close(torch.cat([ya, yb], dim=1), y)
    torch.testing.assert_close(sb, s_end)


def test_fp32_and_bf16_inputs_accumulate_in_fp32():
    r, k, v, w, u, s = [x.detach().float() for x in inputs(1, 20, 2, 8, 8)]
    y, state = wkv6(r.bfloat16(), k.bfloat16(), v.bfloat16(), w.bfloat16(), u, s)
    assert y.dtype == torch.bfloat16 and state.dtype == torch.float32
    ref, _ = wkv6_naive(r.bfloat16(), k.bfloat16(), v.bfloat16(), w.bfloat16(), u, s)
    torch.testing.assert_close(y.float(), ref.float(), atol=0.1, rtol=0.02)


def test_no_initial_state_means_zeros():
    r, k, v, w, u, s = [x.detach() for x in inputs(1, 12, 1, 4, 4)]
    y, _ = wkv6(r, k, v, w, u)
    y0, _ = wkv6(r, k, v, w, u, torch.zeros_like(s))
    torch.testing.assert_close(y, y0)


def test_runs_on_meta_device():
    x = torch.empty(1, 70, 2, 8, device="meta")
    y, s = wkv6(x, x, x, x, None)
    assert y.shape == (1, 70, 2, 8) and s.shape == (1, 2, 8, 8) and s.dtype == torch.float32


@pytest.mark.parametrize("bad, needle", [
    (dict(k=torch.zeros(1, 5, 2, 3)), "k has shape"),
    (dict(v=torch.zeros(1, 4, 2, 4)), "v has shape"),
    (dict(u=torch.zeros(3, 4)), "u has shape"),
    (dict(state=torch.zeros(1, 2, 4, 5)), "state has shape"),
    (dict(w=torch.zeros(1, 5, 2, 4, dtype=torch.long)), "w must be a floating-point"),
    (dict(backend="cuda-magic"), "unknown backend"),
])
def test_bad_inputs_are_named(bad, needle):
    args = dict(r=torch.zeros(1, 5, 2, 4), k=torch.zeros(1, 5, 2, 4), v=torch.zeros(1, 5, 2, 4),
                w=torch.zeros(1, 5, 2, 4), u=None, state=None)
    args.update(bad)
    with pytest.raises(ValueError, match=needle):
        wkv6(**args)


def test_env_var_forces_the_backend(monkeypatch):
    r, k, v, w, u, s = [x.detach() for x in inputs(1, 9, 1, 4, 4)]
    monkeypatch.setenv("GOLDFINCH_WKV_BACKEND", "naive")
    y_naive, _ = wkv6(r, k, v, w, u, s)
    monkeypatch.setenv("GOLDFINCH_WKV_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        wkv6(r, k, v, w, u, s)
    monkeypatch.delenv("GOLDFINCH_WKV_BACKEND")
    torch.testing.assert_close(wkv6(r, k, v, w, u, s)[0], y_naive)


def test_a_scoped_default_backend_gives_way_to_the_previous_one(monkeypatch):
    """The trainer's train.wkv_backend holds for its run only (kernels.wkv_backend_default)."""
    from kernels import default_wkv_backend, set_wkv_backend, wkv_backend_default

    monkeypatch.setenv("GOLDFINCH_WKV_BACKEND", "naive")
    with wkv_backend_default("torch"):
        assert default_wkv_backend() == "torch"
        with wkv_backend_default(None):  # unset: the environment's again
            assert default_wkv_backend() == "naive"
        assert default_wkv_backend() == "torch"
    assert default_wkv_backend() == "naive"
    set_wkv_backend("triton")
    try:
        with pytest.raises(ValueError, match="bogus"), wkv_backend_default("bogus"):
            pass
        assert default_wkv_backend() == "triton"
    finally:
        set_wkv_backend(None)
