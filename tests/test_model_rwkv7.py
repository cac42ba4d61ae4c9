"""RWKV-7 (x070), GoldFinch-7 and Eagle (x052): parity with RWKV-LM's formulas through the
converter, byte-identical round trips, properties of x070, and stateful inference."""
import pytest
import torch

from model import build_model, load_exported, save_exported
from model.convert import export_reference, import_reference
from model.convert.__main__ import main as convert_main
from model_helpers import tiny_config, tiny_model
from rwkv_lm_reference import (lora_width, random_state_dict, x052_layout, x052_logits,
                               x070_layout, x070_logits)

HEAD = 16
WIDTHS = {"w": 32, "a": 32, "v": 16, "g": 48}  # not the formula's: must be read from the shapes


def as_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture(scope="module")
def x070_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("x070") / "rwkv7.pth"
    sd = random_state_dict(x070_layout(3, 64, 97, HEAD, WIDTHS))
    torch.save(sd, path)
    return path, sd


def test_imported_rwkv_lm_x070_computes_rwkv_lms_logits(tmp_path, x070_pth):
    """T=40 spans several chunks of the chunked WKV7 with a ragged tail."""
    path, sd = x070_pth
    assert convert_main(["import", str(path), "--out", str(tmp_path / "m"), "cache_dtype=float32"]) == 0
    model = load_exported(tmp_path / "m").eval()
    cfg = model.cfg
    assert (cfg.arch, cfg.lower_mixer, cfg.channel_mixer, cfg.ffn_width) == ("rwkv7", "rwkv7", "x070", 256)
    att = model.blocks[0].att
    assert {k: getattr(att, f"{k}1").shape[1] for k in "wavg"} == WIDTHS  # read from the shapes
    idx = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(idx)[0].double()
    ref = x070_logits(sd, idx, HEAD)
    assert (ours - ref).abs().max().item() < 1e-4
    assert ref.std() > 0.1  # the check has signal


def test_x070_export_gives_the_same_bytes_and_order(tmp_path, x070_pth):
    path, sd = x070_pth
    import_reference(path, tmp_path / "m")
    back = export_reference(tmp_path / "m", tmp_path / "back.pth")
    loaded = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(loaded) == list(sd) == list(back)
    assert all(as_bytes(loaded[k]) == as_bytes(v) and loaded[k].dtype == v.dtype for k, v in sd.items())


def test_default_lora_widths_follow_rwkv_lms_formula():
    cfg = tiny_config("rwkv7", n_embd=768, head_size=64)
    att = build_model(cfg, device="meta").blocks[0].att
    got = {k: getattr(att, f"{k}1").shape[1] for k in "wavg"}
    assert got == {"w": 64, "a": 64, "v": 32, "g": 128}  # RWKV-7 0.1B's widths
    assert got == {k: lora_width(f, 768) for k, f in zip("wavg", (2.5, 2.5, 1.7, 5))}


def test_bad_x070_checkpoint_fails_with_one_line_and_writes_nothing(tmp_path, capsys, x070_pth):
    _, sd = x070_pth
    bad = {k: v for k, v in sd.items() if k != "blocks.1.att.k_k"}
    torch.save(bad, tmp_path / "bad.pth")
    assert convert_main(["import", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pth" in err and "blocks.1.att.k_k" in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_imported_eagle_computes_rwkv_lms_x052_logits(tmp_path):
    sd = random_state_dict(x052_layout(2, 64, 97, HEAD), seed=3)
    torch.save(sd, tmp_path / "eagle.pth")
    cfg = import_reference(tmp_path / "eagle.pth", tmp_path / "m", ["cache_dtype=float32"])
    assert (cfg.arch, cfg.lower_mixer, cfg.channel_mixer) == ("finch", "eagle", "x052")
    idx = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = load_exported(tmp_path / "m")(idx)[0].double()
    assert (ours - x052_logits(sd, idx, HEAD)).abs().max().item() < 1e-4
    back = export_reference(tmp_path / "m", tmp_path / "back.pth")
    assert list(back) == list(sd) and all(torch.equal(back[k], v) for k, v in sd.items())


def test_goldfinch7_export_layout_round_trips_bitwise(tmp_path):
    model = tiny_model("goldfinch", lower="rwkv7", n_layer=3).eval()
    save_exported(model.state_dict(), model.cfg, tmp_path / "ours")
    ref = export_reference(tmp_path / "ours", tmp_path / "gf7.pth")
    assert "blocks.0.att.k_a" in ref and "blocks.0.ffn.x_k" in ref  # x070 names below
    assert "blocks.2.att.time_maa_v_cache" in ref and "blocks.2.ffn.x_k" in ref  # GOLD above
    assert "w_kv_cache_a.weight" in ref
    cfg = import_reference(tmp_path / "gf7.pth", tmp_path / "again", ["cache_dtype=float32", "gold_rope_theta=null"])
    assert (cfg.arch, cfg.lower_mixer, cfg.n_gold, cfg.channel_mixer) == ("goldfinch", "rwkv7", 1, "x070")
    idx = torch.randint(0, 97, (2, 21))
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path / "again")(idx)[0], model(idx)[0])


def test_x070_decay_stays_inside_its_bounds(monkeypatch):
    """What the mixer hands the kernel: exp(-exp(w)) strictly inside (exp(-e^-0.5), 1)."""
    import model.rwkv7_time_mix as x070
    seen = []

    def spy(r, w, *rest, **kw):
        seen.append(w)
        return real(r, w, *rest, **kw)
    real = x070.wkv7
    monkeypatch.setattr(x070, "wkv7", spy)
    model = tiny_model("rwkv7", perturb=1.0, n_layer=2).double()  # wild weights
    with torch.no_grad():
        model(torch.randint(0, 97, (4, 32)))
    decay = torch.exp(-torch.exp(torch.cat(seen)))
    lo = torch.exp(-torch.exp(torch.tensor(-0.5, dtype=torch.float64)))
    assert len(seen) == 2 and decay.min() > lo and decay.max() < 1
    assert decay.min() < 0.6 and decay.max() > 0.99  # both ends are reached: the bound binds


def test_later_blocks_take_v_first_and_block_0s_value_residual_is_unused():
    torch.manual_seed(0)
    model = tiny_model("rwkv7", n_layer=3).eval()
    idx = torch.randint(0, 97, (2, 24))

    def logits():
        with torch.no_grad():
            return model(idx)[0]
    base = logits()
    att0, att1 = model.blocks[0].att, model.blocks[1].att
    with torch.no_grad():
        for name in ("v0", "v1", "v2"):
            getattr(att0, name).add_(torch.randn_like(getattr(att0, name)))
    assert torch.equal(logits(), base)  # layer 0's v0/v1/v2 have no effect
    with torch.no_grad():
        att1.v0.fill_(60.0)  # gate -> 1: block 1's v is the first block's v
        gated = logits()
        att1.value.weight.add_(torch.randn_like(att1.value.weight))
    assert torch.allclose(logits(), gated, atol=1e-6)  # its own value map no longer matters
    with torch.no_grad():
        att1.v0.fill_(-60.0)  # gate -> 0: its own v again
        own = logits()
        att1.value.weight.add_(torch.randn_like(att1.value.weight))
    assert not torch.allclose(logits(), own, atol=1e-3)


@pytest.mark.parametrize("arch, kw", [("rwkv7", {}), ("goldfinch", dict(lower="rwkv7")),
                                      ("finch", dict(lower="eagle"))])
def test_pieces_with_state_equal_one_pass_and_prefill_is_exact(arch, kw):
    model = tiny_model(arch, n_layer=3, **kw).eval()
    idx = torch.randint(0, 97, (2, 45))
    with torch.no_grad():
        full, _ = model(idx)
        state, pieces = None, []
        for lo, hi in ((0, 17), (17, 18), (18, 45)):  # a chunk boundary, one token, a ragged rest
            out, state = model(idx[:, lo:hi], state)
            pieces.append(out)
        last, _ = model(idx, last_only=True)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(last[:, -1], full[:, -1], atol=2e-5, rtol=1e-4)
    assert state.seen == 45


def test_unused_ln0_of_later_blocks_is_dropped_on_import(tmp_path, x070_pth):
    """RWKV-LM's GPT-mode demo model gives every block an ln0 it never applies after block 0."""
    _, sd = x070_pth
    extra = dict(sd, **{f"blocks.{i}.ln0.{p}": torch.ones(64) * 7 for i in (1, 2) for p in ("weight", "bias")})
    torch.save(extra, tmp_path / "demo.pth")
    import_reference(tmp_path / "demo.pth", tmp_path / "m")
    back = export_reference(tmp_path / "m", tmp_path / "back.pth")
    assert list(back) == list(sd)  # the released layout: block 0's ln0 only
