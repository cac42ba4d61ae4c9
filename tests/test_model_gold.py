"""GOLD as the paper's main config defines it: no position encoding (unless asked for), and the
k and v mixing amounts from one data-dependent mix over the normed embeddings."""
import pytest
import torch

from model_helpers import tiny_model


def gold_att(**kw):
    model = tiny_model("goldfinch", **kw)
    return model.blocks[-1].att


def repeated(n: int, width: int, seed: int) -> torch.Tensor:
    """[1, n, C] where positions 1..3 repeat at 7..9 (and 0 at 6): with the same predecessor,
    a token-shifted source gives the same content at both places."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, width, generator=g)
    x[:, 6:10] = x[:, 0:4]
    return x


@pytest.mark.parametrize("theta, position_free", [(None, True), (10000.0, False)])
def test_scores_depend_on_content_only_without_rope(theta, position_free):
    att = gold_att(gold_rope_theta=theta)
    c = att.query.in_features
    k, _ = att.keys_values(repeated(12, c, 1), repeated(12, c, 2))
    q = att.queries(repeated(12, c, 3), None, 0)
    # the same query content (positions 2 and 8) against the same key content (1 and 7), at
    # relative distances 1, 7, -5 and 1: without RoPE every pairing scores the same
    scores = torch.stack([q[..., i, :] @ k[..., j, :].transpose(-1, -2)
                          for i, j in ((2, 1), (8, 1), (2, 7), (8, 7))])
    same = torch.allclose(scores, scores[:1].expand_as(scores), atol=1e-5, rtol=1e-5)
    assert same == position_free
    # and queries alone: placing the sequence further along changes nothing without RoPE
    assert torch.equal(att.queries(repeated(12, c, 3), None, 40), q) == position_free


def test_value_amount_and_key_amount_come_from_the_embeddings():
    att = gold_att()
    with torch.no_grad():
        att.kv_mix.lora_a.normal_(0, 0.3)  # the joint LoRA is zero at init: give it signal
    c = att.query.in_features
    k_cache, e = torch.randn(1, 10, c), torch.randn(1, 10, c)
    k, v = att.keys_values(k_cache, e)
    k2, v2 = att.keys_values(k_cache + torch.randn_like(k_cache), e)
    assert torch.equal(v2, v) and not torch.allclose(k2, k)  # v never reads the key cache
    k3, _ = att.keys_values(k_cache, e + 0.5 * torch.randn_like(e))
    assert not torch.allclose(k3, k)  # the key's mixing amount is read off e, not off k_cache
    with torch.no_grad():
        att.kv_mix.lora_b[0].zero_()
        att.kv_mix.mu[0].zero_()
    k4, v4 = att.keys_values(k_cache, e)
    k5, _ = att.keys_values(k_cache, e + 0.5 * torch.randn_like(e))
    assert torch.equal(v4, v) and torch.equal(k5, k4)  # slot 0 is the key's amount, slot 1 v's
