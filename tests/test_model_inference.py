"""Stateful forward: pieces with state == one pass; last_only == the full pass's last logits."""
import pytest
import torch

from model import build_model

from model_helpers import ARCHS, VOCAB, tiny_config, tiny_model


def run_pieces(model, idx, cuts):
    state, outs = None, []
    for a, b in zip([0] + cuts, cuts + [idx.shape[1]]):
        logits, state = model(idx[:, a:b], state)
        outs.append(logits)
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cuts", [[1], [7, 8, 20], [13]])
def test_pieces_with_state_equal_one_pass(arch, cuts):
    model = tiny_model(arch)
    idx = torch.randint(0, VOCAB, (2, 29))
    full, state = model(idx)
    pieces, piece_state = run_pieces(model, idx, cuts)
    torch.testing.assert_close(pieces, full, atol=2e-5, rtol=1e-4)
    assert piece_state.seen == state.seen == 29
    assert piece_state.cache_bytes() == state.cache_bytes()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("length", [1, 3, 5, 6, 31])
def test_last_only_equals_full_pass(arch, length):
    model = tiny_model(arch, n_layer=9)  # 3 GOLD blocks: the tail is 6 positions
    idx = torch.randint(0, VOCAB, (2, length))
    full, _ = model(idx)
    last, state = model(idx, last_only=True)
    assert last.shape == (2, 1, VOCAB)
    torch.testing.assert_close(last, full[:, -1:], atol=2e-5, rtol=1e-4)
    more = torch.randint(0, VOCAB, (2, 4))
    cont, _ = model(more, state)
    whole, _ = model(torch.cat([idx, more], dim=1))
    torch.testing.assert_close(cont, whole[:, -4:], atol=2e-5, rtol=1e-4)


def test_last_only_after_a_cached_prefix():
    model = tiny_model("goldfinch")
    idx = torch.randint(0, VOCAB, (1, 40))
    _, state = model(idx[:, :15])
    last, _ = model(idx[:, 15:], state, last_only=True)
    full, _ = model(idx)
    torch.testing.assert_close(last, full[:, -1:], atol=2e-5, rtol=1e-4)


def test_goldfinch_state_holds_only_the_compressed_cache():
    cfg = tiny_config("goldfinch", cache_dtype="bfloat16")
    model = build_model(cfg).eval()
    _, state = model(torch.randint(0, VOCAB, (3, 11)))
    assert state.compressed.shape == (3, 11, cfg.n_embd // cfg.kv_compression)
    assert state.compressed.dtype == torch.bfloat16
    assert state.tokens.dtype == torch.int32 and state.tokens.shape == (3, 11)
    assert all(b.k is None and b.v is None for b in state.blocks)
    finch = state.blocks[: cfg.n_finch]
    assert all(b.wkv.shape == (3, cfg.n_head, cfg.head_size, cfg.head_size) for b in finch)
    assert all(b.wkv.dtype == torch.float32 for b in finch)
    assert all(b.wkv is None and b.att_shift.shape == (3, cfg.n_embd) for b in state.blocks[cfg.n_finch:])


@pytest.mark.parametrize("arch, per_token", [
    ("goldfinch", lambda c: 2 * c.n_embd // c.kv_compression + 4),
    ("llama", lambda c: 2 * 2 * c.n_layer * c.n_embd),
    ("finch", lambda c: 0),
])
@pytest.mark.parametrize("n_layer, n_embd", [(3, 64), (6, 128), (4, 256)])
def test_cache_bytes_measured_equal_formula(arch, per_token, n_layer, n_embd):
    cfg = tiny_config(arch, n_layer=n_layer, n_embd=n_embd, cache_dtype="bfloat16")
    model = build_model(cfg).eval()
    state = None
    for length in (5, 9):
        _, state = model(torch.randint(0, VOCAB, (2, length)), state)
    assert state.cache_bytes() == 2 * 14 * per_token(cfg)


def test_cache_bytes_with_fp32_cache():
    cfg = tiny_config("goldfinch", n_embd=128, cache_dtype="float32")
    _, state = build_model(cfg)(torch.randint(0, VOCAB, (1, 10)))
    assert state.cache_bytes() == 10 * (4 * 8 + 4)


@pytest.mark.parametrize("arch", ARCHS)
def test_bad_inputs_name_the_value(arch):
    model = tiny_model(arch, perturb=0)
    with pytest.raises(ValueError, match=f"token id {VOCAB}"):
        model(torch.tensor([[1, VOCAB]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.tensor([1, 2]))
    _, state = model(torch.randint(0, VOCAB, (2, 4)))
    with pytest.raises(ValueError, match="batch size 2"):
        model(torch.randint(0, VOCAB, (3, 4)), state)
    other = "llama" if arch != "llama" else "finch"
    _, foreign = tiny_model(other, perturb=0)(torch.randint(0, VOCAB, (2, 4)))
    with pytest.raises(ValueError, match=f"arch '{other}'"):
        model(torch.randint(0, VOCAB, (2, 4)), foreign)


def test_detached_state_continues_identically():
    """Truncated back-propagation: the detached state gives the same outputs, and no gradient
    reaches the piece before it."""
    model = tiny_model("goldfinch")
    idx = torch.randint(0, VOCAB, (1, 12))
    _, state = model(idx[:, :6])
    a, _ = model(idx[:, 6:], state)
    cut = state.detach()
    b, _ = model(idx[:, 6:], cut)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    held = [state.compressed] + [t for blk in state.blocks for t in blk.tensors()]
    assert all(t.requires_grad for t in held)
    assert not any(t.requires_grad for t in [cut.compressed] + [t for blk in cut.blocks for t in blk.tensors()])
    through = torch.autograd.grad(a.sum(), [state.compressed, state.blocks[0].wkv], allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in through)
    assert torch.autograd.grad(b.sum(), [state.compressed], allow_unused=True) == (None,)


@pytest.mark.parametrize("arch", ["goldfinch", "llama", "goldfinch7"])
def test_a_full_pass_never_rounds_through_the_cache_format(arch):
    """cache_dtype is what the state carries to the next call: one pass computes at full precision,
    so its logits are the same whatever the cache format."""
    exact = tiny_model(arch, cache_dtype="float32").eval()
    rounded = build_model(tiny_config(arch, cache_dtype="bfloat16")).eval()
    rounded.load_state_dict(exact.state_dict())
    idx = torch.randint(0, VOCAB, (2, 15))
    with torch.no_grad():
        a, state = rounded(idx)
        assert torch.equal(a, exact(idx)[0])
    kept = state.compressed if state.compressed is not None else state.blocks[0].k
    assert kept.dtype == torch.bfloat16
