"""Backend choice of `kernels.wkv6`: auto, argument over config over env var, Triton fallbacks,
and named input errors."""
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kernels import set_wkv_backend, triton_runtime, wkv6
from kernels.wkv6 import triton_autograd
from kernels.wkv6.triton_autograd import wkv6_triton
from wkv6_helpers import triton_device

REPO = Path(__file__).resolve().parents[1]
wkv6_module = importlib.import_module("kernels.wkv6")  # the package; `kernels.wkv6` is the function


def small(kk=16, vv=16, t=9, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(kk * 100 + t)
    mk = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    return mk(1, t, 2, kk), mk(1, t, 2, kk), mk(1, t, 2, vv), mk(1, t, 2, kk), \
        mk(2, kk).float(), torch.randn(1, 2, kk, vv, generator=g).to(device)


@pytest.fixture
def calls(monkeypatch):
    """Records which backend function `wkv6` ends up calling."""
    seen = []
    for name in ("wkv6_chunked", "wkv6_naive"):
        real = getattr(wkv6_module, name)
        monkeypatch.setattr(wkv6_module, name,
                            lambda *a, _r=real, _n=name: seen.append(_n) or _r(*a))
    real_triton = wkv6_module._run_triton
    monkeypatch.setattr(wkv6_module, "_run_triton",
                        lambda *a, **kw: seen.append("triton") or real_triton(*a, **kw))
    real_forward = triton_autograd.wkv6_forward
    monkeypatch.setattr(triton_autograd, "wkv6_forward",
                        lambda *a: seen.append("triton kernels") or real_forward(*a))
    monkeypatch.setattr(triton_runtime, "_warned", set())
    monkeypatch.delenv(wkv6_module.BACKEND_ENV, raising=False)
    yield seen
    set_wkv_backend(None)


def test_auto_picks_torch_on_cpu(calls):
    wkv6(*small())
    assert calls == ["wkv6_chunked"]


def test_triton_backend_matches_torch(calls):
    args = small(t=20, device=triton_device())
    y_t, s_t = wkv6(*args, backend="triton")
    y_c, s_c = wkv6(*args, backend="torch")
    assert calls == ["triton", "triton kernels", "wkv6_chunked"]
    torch.testing.assert_close(y_t, y_c, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_t, s_c, rtol=1e-4, atol=1e-4)


def test_env_var_is_only_a_default_and_the_argument_wins(calls, monkeypatch):
    monkeypatch.setenv(wkv6_module.BACKEND_ENV, "naive")
    wkv6(*small(), backend="torch")
    wkv6(*small())
    assert calls == ["wkv6_chunked", "wkv6_naive"]


def test_configured_default_beats_the_env_var_and_the_argument_beats_both(calls, monkeypatch):
    monkeypatch.setenv(wkv6_module.BACKEND_ENV, "naive")
    set_wkv_backend("torch")
    wkv6(*small())
    wkv6(*small(), backend="naive")
    set_wkv_backend(None)
    wkv6(*small())
    assert calls == ["wkv6_chunked", "wkv6_naive", "wkv6_naive"]


@pytest.mark.parametrize("where", ["argument", "env", "config"])
def test_unknown_backend_is_named_wherever_it_comes_from(where, monkeypatch):
    monkeypatch.delenv(wkv6_module.BACKEND_ENV, raising=False)
    if where == "config":
        with pytest.raises(ValueError, match="'magic' \\(set_default_backend\\)"):
            set_wkv_backend("magic")
        return
    if where == "env":
        monkeypatch.setenv(wkv6_module.BACKEND_ENV, "magic")
    with pytest.raises(ValueError, match="unknown backend 'magic'.*" +
                       ("GOLDFINCH_WKV_BACKEND" if where == "env" else "backend=")):
        wkv6(*small(), backend="magic" if where == "argument" else None)


def test_unsupported_head_size_warns_once_and_falls_back(calls):
    args = small(kk=8, vv=8)
    with pytest.warns(RuntimeWarning, match="head size K=8"):
        y, _ = wkv6(*args, backend="triton")
    with _no_warnings():
        wkv6(*args, backend="triton")
    torch.testing.assert_close(y, wkv6_module.wkv6_naive(*args)[0])
    assert calls.count("wkv6_chunked") == 2


def test_fp64_inputs_fall_back_to_torch(calls):
    args = [x.double() for x in small()]
    with pytest.warns(RuntimeWarning, match="float64"):
        wkv6(*args, backend="triton")
    assert calls[-1] == "wkv6_chunked"


def test_non_contiguous_inputs_give_the_same_result():
    r, k, v, w, u, s = small(t=12, device=triton_device())
    strided = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (r, k, v, w)]
    assert not strided[0].is_contiguous()
    y0, s0 = wkv6_triton(r, k, v, w, u, s)
    y1, s1 = wkv6(*strided, u, s.transpose(-1, -2).contiguous().transpose(-1, -2), backend="triton")
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(s1, s0)


@pytest.mark.parametrize("bad, needle", [
    (dict(v=torch.zeros(1, 5, 2, 16, dtype=torch.bfloat16)), "v has dtype"),
    (dict(w=torch.zeros(1, 5, 2, 16, dtype=torch.float16)), "w has dtype"),
    (dict(k=torch.zeros(1, 5, 2, 8)), "k has shape"),
    (dict(state=torch.zeros(1, 2, 16, 16, device="meta")), "state is on meta"),
    (dict(u=torch.zeros(2, 16, device="meta")), "u is on meta"),
])
def test_bad_inputs_are_named(bad, needle):
    args = dict(r=torch.zeros(1, 5, 2, 16), k=torch.zeros(1, 5, 2, 16), v=torch.zeros(1, 5, 2, 16),
                w=torch.zeros(1, 5, 2, 16), u=None, state=None, backend="triton")
    args.update(bad)
    with pytest.raises(ValueError, match=needle):
        wkv6(**args)


def test_compiled_kernels_refuse_cpu_tensors_with_a_clear_message():
    class CompiledKernel:  # stands in for a JITFunction built without the interpreter
        pass
    with pytest.raises(triton_runtime.TritonUnavailable, match="TRITON_INTERPRET=1"):
        triton_runtime.check_runnable(torch.zeros(1), CompiledKernel(), "wkv6 (triton)")


def test_without_interpreter_import_is_lazy_and_cpu_triton_errors_clearly():
    script = textwrap.dedent("""
        import sys, torch
        import kernels
        assert "triton" not in sys.modules, "import kernels must not import triton"
        x = torch.zeros(1, 3, 1, 16)
        kernels.wkv6(x, x, x, x)  # auto on CPU: torch, still no triton
        assert "triton" not in sys.modules
        try:
            kernels.wkv6(x, x, x, x, backend="triton")
        except RuntimeError as err:
            print("ERR", err)
    """)
    unset = ("TRITON_INTERPRET", "GOLDFINCH_WKV_BACKEND")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "TRITON_INTERPRET=1" in out.stdout, out.stdout


@pytest.mark.gpu
def test_auto_picks_triton_on_cuda(calls):
    args = small(kk=64, vv=64, t=100, device="cuda")
    y, s = wkv6(*args)
    assert calls == ["triton", "triton kernels"], "auto on CUDA did not run the Triton kernels"
    y0, s0 = wkv6(*args, backend="torch")
    torch.testing.assert_close(y, y0, rtol=1e-3, atol=1e-3)


class _no_warnings:
    """Fails if the block raises any RuntimeWarning."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings(record=True)
        self._seen = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not [w for w in self._seen if issubclass(w.category, RuntimeWarning)]
