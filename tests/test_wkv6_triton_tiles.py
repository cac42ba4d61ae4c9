"""Several tiles per head: the Triton WKV6 kernels with their tile plan shrunk to 32 channels, so
that every kernel splits K = 64 and 128 into 2 and 4 tiles (the state passes into 4 and 16), as
a GPU does at K = 128, against an independent float64 per-token recurrence. T = 20 spans two
chunks of 16, the second one partial; B = H = 2. Small enough for the CPU interpreter."""
import pytest
import torch

from kernels.wkv6 import triton_autograd
from kernels.wkv6.triton_plan import LaunchPlan, Tiles
from wkv6_helpers import compare, make_inputs

SMALL = Tiles(state_bk=32, state_bv=32, full_k_bv=32, full_v_bk=32, decay_bk=32)


def recurrence64(r, k, v, w, u=None, state=None):
    """y and the final state token by token in float64: the definition, nothing shared with the
    kernels or the other references."""
    b, t, h, kk = r.shape
    s = torch.zeros(b, h, kk, v.shape[-1], dtype=torch.float64, device=r.device) \
        if state is None else state.double()
    ys = []
    for i in range(t):
        kv = k[:, i].double()[..., :, None] * v[:, i].double()[..., None, :]
        bonus = 0 if u is None else u.double()[None, :, :, None] * kv
        ys.append(torch.einsum("bhk,bhkv->bhv", r[:, i].double(), s + bonus))
        s = torch.exp(-torch.exp(w[:, i].double()))[..., None] * s + kv
    return torch.stack(ys, 1), s


@pytest.fixture
def grids(monkeypatch):
    """The grid of every kernel launch, to check the tests really run several tiles per head."""
    seen = {}
    real = triton_autograd.launch

    def spy(kernel, grid, *args, **consts):
        seen[kernel.__name__] = grid
        real(kernel, grid, *args, **consts)
    monkeypatch.setattr(triton_autograd, "launch", spy)
    for name in ("wkv6_forward", "wkv6_backward"):
        fn = getattr(triton_autograd, name)
        monkeypatch.setattr(triton_autograd, name,
                            lambda *a, _fn=fn, **kw: _fn(*a, **kw, launch=spy))
    return seen


def assert_tiled(grids, kk):
    """Every kernel ran kk/32 tiles per head (the state passes (kk/32)^2), for B * H = 4."""
    assert len(grids) == 6, grids
    for name, (g0, g1, g2) in grids.items():
        state_pass = name in ("chunk_states_fwd", "chunk_state_grads_bwd")
        per_head = g0 * g1 if state_pass else g0  # the chunk kernels' g1 counts chunks
        assert per_head == (kk // 32) ** (2 if state_pass else 1), (name, grids)
        assert g2 == 4, (name, grids)


@pytest.mark.parametrize("kk, bonus, with_state", [
    (64, True, True), (64, False, False), (128, True, True)])
def test_several_tiles_per_head_match_float64_recurrence(kk, bonus, with_state, grids):
    args = make_inputs(2, 20, 2, kk, kk, bonus=bonus, with_state=with_state, w_scale=0.5,
                       seed=kk + bonus)
    compare(args, tol=1e-4, chunk=16, ref_fn=recurrence64, tiles=SMALL)
    assert_tiled(grids, kk)


def test_bf16_several_tiles_per_head(grids):
    args = make_inputs(2, 20, 2, 64, 64, bonus=True, dtype=torch.bfloat16, seed=3)
    compare(args, tol=1.5e-2, chunk=16, ref_fn=recurrence64, tiles=SMALL)  # dw: 5% with bf16 dr/dk
    assert_tiled(grids, 64)


def test_recurrence64_is_the_definition():
    """The reference itself, on a case small enough to write out: one head, K = V = 1."""
    r, k, v, w = (torch.tensor([[[[x]]], [[[y]]]]).reshape(1, 2, 1, 1)
                  for x, y in ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (0.0, 0.0)))
    y, s = recurrence64(r, k, v, w, u=torch.tensor([[0.5]]))
    decay = torch.exp(-torch.exp(torch.tensor(0.0))).double()
    assert torch.allclose(y.flatten(), torch.tensor([1 * 0.5 * 15, 2 * (15 + 0.5 * 24)],
                                                    dtype=torch.float64))
    assert torch.allclose(s.flatten(), (decay * 15 + 24).reshape(1))


@pytest.mark.parametrize("tiles, needle", [
    (Tiles(state_bk=8), "state_bk=8"), (Tiles(full_k_bv=48), "full_k_bv=48"),
    (Tiles(decay_bk=128), "decay_bk=128")])
def test_bad_tiles_are_named(tiles, needle):
    with pytest.raises(ValueError, match=needle):
        LaunchPlan.make(2, 64, 64, torch.float32, 64, tiles)
