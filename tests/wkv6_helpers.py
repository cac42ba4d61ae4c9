"""Shared pieces of the WKV6 tests: inputs, outputs with all gradients, an fp64 reference, and
the device the Triton kernels run on in this session."""
import pytest
import torch

from kernels.triton_runtime import interpreting
from kernels.wkv6 import wkv6_naive
from kernels.wkv6.triton_autograd import wkv6_triton

NAMES = ["y", "final_state", "dr", "dk", "dv", "dw", "du", "dstate"]


def triton_device() -> str:
    """CPU under the interpreter, else CUDA (compiled kernels); the same tests run on both."""
    if interpreting():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("TRITON_INTERPRET=0 without a CUDA device: Triton can run nowhere here")


def make_inputs(b, t, h, kk, vv, bonus=True, with_state=True, w_shift=0.0, w_scale=1.0,
                dtype=torch.float32, device=None, seed=0):
    """r, k, v, w (dtype) and u, state (fp32), all requiring grad; u/state None when left out."""
    device = device or triton_device()
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    r, k, v = mk(b, t, h, kk), mk(b, t, h, kk), mk(b, t, h, vv)
    w = mk(b, t, h, kk) * w_scale + w_shift
    u = mk(h, kk) if bonus else None
    state = mk(b, h, kk, vv) if with_state else None

    def cast(x, d):
        return None if x is None else x.to(device=device, dtype=d).requires_grad_()
    return [cast(r, dtype), cast(k, dtype), cast(v, dtype), cast(w, dtype), cast(u, torch.float32),
            cast(state, torch.float32)]


def outputs_and_grads(fn, args, seed=1):
    """y, final state, and the grads of a random linear function of both w.r.t. every input."""
    y, s = fn(*args)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g).to(y.device, y.dtype)
    gs = torch.randn(s.shape, generator=g).to(s.device, s.dtype)
    live = [a for a in args if a is not None]
    grads = torch.autograd.grad((y * gy).sum() + (s * gs).sum(), live)
    return [y, s, *grads]


def reference(args, fn=wkv6_naive):
    """The same computation in fp64 from the same (possibly bf16-rounded) input values."""
    as64 = [None if a is None else a.detach().double().requires_grad_() for a in args]
    return outputs_and_grads(fn, as64)


def assert_scaled_close(actual, expected, tol, what):
    """max |actual - expected| <= tol * max(1, max |expected|), and everything finite."""
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} * {scale:.3g}"


def compare(args, tol, chunk, ref_fn=wkv6_naive, **triton_kw):
    """Triton's outputs and every gradient against `ref_fn` in fp64, named on failure."""
    got = outputs_and_grads(lambda *a: wkv6_triton(*a, chunk_size=chunk, **triton_kw), args)
    want = reference(args, ref_fn)
    names = [n for n, a in zip(NAMES, [0, 0, *args]) if a is not None]
    assert len(got) == len(want) == len(names)
    for name, a, b in zip(names, got, want):
        assert_scaled_close(a, b, tol, name)
