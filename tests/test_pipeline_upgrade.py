"""Upgrading Finch to GoldFinch as the paper does: the loaded blocks compute exactly what they
computed, a Finch-C2 target refuses RWKV-6 weights, and reference checkpoints load directly."""
import pytest
import torch

from model import build_model, save_exported
from model.convert import to_reference
from pipeline.errors import PipelineError
from pipeline.training.init_from import load_matching

from model_helpers import VOCAB, tiny_config, tiny_model


def hidden_after(model, block: int, idx) -> torch.Tensor:
    seen = {}

    def keep(module, args, out):
        seen["x"] = out[0]  # returns None: the block's output stays as it was
    handle = model.blocks[block].register_forward_hook(keep)
    with torch.no_grad():
        model(idx)
    handle.remove()
    return seen["x"]


@pytest.mark.parametrize("n_layer", [6, 12])
def test_upgraded_lower_blocks_compute_the_finch_models_hidden_state_bitwise(tmp_path, n_layer):
    finch = tiny_model("finch", n_layer=n_layer).eval()  # every parameter perturbed: all paths live
    save_exported(finch.state_dict(), finch.cfg, tmp_path / "finch")
    up = build_model(tiny_config("goldfinch", n_layer=n_layer, lower="finch", gold_ratio=6)).eval()
    report = load_matching(up, str(tmp_path / "finch"))
    n_lower = up.cfg.n_finch
    assert (n_lower, up.cfg.n_gold) == (int(n_layer * 5 / 6), n_layer - int(n_layer * 5 / 6))
    assert all(f"blocks.{i}.att.bonus" in report["loaded"] for i in range(n_lower))
    idx = torch.randint(0, VOCAB, (2, 23))
    assert torch.equal(hidden_after(up, n_lower - 1, idx), hidden_after(finch, n_lower - 1, idx))


def test_finch_c2_target_refuses_rwkv6_weights(tmp_path):
    finch = tiny_model("finch")
    save_exported(finch.state_dict(), finch.cfg, tmp_path / "finch")
    c2 = build_model(tiny_config("goldfinch"))
    before = {k: v.clone() for k, v in c2.state_dict().items()}
    with pytest.raises(PipelineError, match=r"block 0 is RWKV-6 \(finch\) in the source but "
                                            r"Finch-C2 \(finch_c2\) in this model.*model.lower=finch"):
        load_matching(c2, str(tmp_path / "finch"))
    assert all(torch.equal(v, before[k]) for k, v in c2.state_dict().items())  # nothing loaded


@pytest.mark.parametrize("kind", ["finch", "goldfinch"])
def test_init_from_reads_a_reference_checkpoint(tmp_path, kind):
    """A reference .pth converts on the fly: a Finch one into the upgrade architecture, a GoldFinch
    one into GoldFinch, every tensor landing where it computes the same thing."""
    kw = dict(mix_lora_rank=32, decay_lora_rank=64)
    source = tiny_model(kind, **kw)
    torch.save(to_reference(source.cfg, source.state_dict()), tmp_path / "ref.pth")
    target_kw = dict(lower="finch", gold_ratio=6) if kind == "finch" else {}
    target = build_model(tiny_config("goldfinch", **kw, **target_kw))
    report = load_matching(target, str(tmp_path / "ref.pth"))
    own = target.state_dict()
    for name in report["loaded"]:
        assert torch.equal(own[name], source.state_dict()[name]), name
    if kind == "goldfinch":
        assert report["new"] == [] and report["ignored"] == []
        assert "blocks.0.att.unused_bonus" in report["loaded"]
    else:
        assert "kv_compression.compress.weight" in report["new"]


def test_rwkv7_pth_upgrades_to_goldfinch7_with_the_lower_blocks_bitwise(tmp_path):
    """A released-layout RWKV-7 .pth under GOLD: its blocks compute exactly what they computed."""
    from model.convert import from_reference
    from rwkv_lm_reference import random_state_dict, x070_layout

    sd = random_state_dict(x070_layout(4, 64, VOCAB, 16, dict(w=32, a=32, v=32, g=32)), seed=5)
    torch.save(sd, tmp_path / "rwkv7.pth")
    cfg, ours = from_reference(sd, ["cache_dtype=float32"])
    rwkv7 = build_model(cfg).eval()
    rwkv7.load_state_dict(ours)
    up = build_model(tiny_config("goldfinch", lower="rwkv7", n_layer=6)).eval()
    report = load_matching(up, str(tmp_path / "rwkv7.pth"))
    assert (up.cfg.n_finch, up.cfg.n_gold) == (4, 2)
    assert all(f"blocks.{i}.att.k_a" in report["loaded"] for i in range(4))
    assert not any(n.startswith(("blocks.4.", "blocks.5.", "kv_compression.")) for n in report["loaded"])
    idx = torch.randint(0, VOCAB, (2, 23))
    assert torch.equal(hidden_after(up, 3, idx), hidden_after(rwkv7, 3, idx))


@pytest.mark.parametrize("cross_kind", [False, True])
def test_gold_blocks_take_nothing_from_finch_blocks_unless_asked(tmp_path, cross_kind):
    finch = tiny_model("finch")
    save_exported(finch.state_dict(), finch.cfg, tmp_path / "finch")
    up = build_model(tiny_config("goldfinch", lower="finch", gold_ratio=3))
    gold = [i for i, block in enumerate(up.blocks) if block.kind == "gold"]
    fresh = {k: v.clone() for k, v in up.state_dict().items()}
    report = load_matching(up, str(tmp_path / "finch"), cross_kind=cross_kind)
    own, source = up.state_dict(), finch.state_dict()
    in_gold = [n for n in own if any(n.startswith(f"blocks.{i}.") for i in gold)]
    shared = [n for n in in_gold if n in source]  # att.output, att.ln_x, ffn, norms share names
    assert gold and {f"blocks.{gold[0]}.att.output.weight", f"blocks.{gold[0]}.att.ln_x.weight",
                     f"blocks.{gold[0]}.ffn.key.weight"} <= set(shared)
    for name in shared:
        assert torch.equal(own[name], source[name] if cross_kind else fresh[name]), name
    assert bool(report["other_kind"]) != cross_kind
    assert all(n in report["ignored"] for n in report["other_kind"])
    assert set(shared).isdisjoint(report["loaded"]) != cross_kind
    assert "blocks.0.ffn.key.weight" in report["loaded"]  # same-kind blocks load as before
