"""model.convert: the paper's reference checkpoints in and out, losslessly, with clear refusals.

The expected reference layout below is written from the reference implementation's module
definitions (recursal/GoldFinch-paper: tmix_x060, tmix_x060c2, tmix_gold, tmix_llama, cmix_x060,
cmix_llama, src/model.py), independently of our converter.
"""
import pytest
import torch

from model import build_model, load_exported, save_exported
from model.convert import export_reference, import_reference
from model.convert.__main__ import main as convert_main

from model_helpers import tiny_model

MIX, DECAY = 32, 64  # the reference's fixed LoRA ranks (D_MIX_LORA, D_DECAY_LORA)


def reference_layout(kind: str, n_layer: int, n_embd: int, vocab: int, head_size: int,
                     ratio: int = 3) -> dict[str, tuple]:
    """Every key of the reference's state dict, in its order, with its shape."""
    c, a = n_embd, n_embd
    h, ffn = a // head_size, int(c * 3.5) // 32 * 32
    vec, out = (1, 1, c), {"emb.weight": (vocab, c)}
    lower_kind = {"goldfinch": "x060c2", "finchc2": "x060c2", "upgrade": "x060", "finch": "x060"}.get(kind)
    n_lower = n_layer if kind in ("finch", "finchc2", "llama") else int(n_layer * (ratio - 1) / ratio)
    for i in range(n_layer):
        p = f"blocks.{i}."
        for ln in ("ln1", "ln2") + (("ln0",) if i == 0 else ()):
            out[p + ln + ".weight"] = out[p + ln + ".bias"] = (c,)
        att = p + "att."
        if kind == "llama":
            for w in ("wq", "wk", "wv"):
                out[att + w + ".weight"] = (a, c)
            out[att + "wo.weight"] = (c, a)
            f = c * 4 * 2 // 3 // 32 * 32
            out.update({p + "ffn.w1.weight": (f, c), p + "ffn.w2.weight": (c, f), p + "ffn.w3.weight": (f, c)})
            continue
        if i < n_lower and lower_kind == "x060":
            for s in ("x", "w", "k", "v", "r", "g"):
                out[att + "time_maa_" + s] = vec
            out.update({att + "time_maa_w1": (c, 5 * MIX), att + "time_maa_w2": (5, MIX, c),
                        att + "time_decay": (1, 1, a), att + "time_decay_w1": (c, DECAY),
                        att + "time_decay_w2": (DECAY, a), att + "time_faaaa": (h, head_size)})
            for lin in ("receptance", "key", "value", "gate"):
                out[att + lin + ".weight"] = (a, c)
            out[att + "output.weight"] = (c, a)
            out[att + "ln_x.weight"] = out[att + "ln_x.bias"] = (a,)
        elif i < n_lower:
            for s in ("x", "r", "k", "v", "w", "v2"):
                out[att + "time_maa_" + s] = vec
            out.update({att + "time_maa_w2": (5, MIX, c), att + "time_maa_w1": (c, 5 * MIX),
                        att + "time_decay": (1, 1, a), att + "time_decay_w1": (c, DECAY),
                        att + "time_decay_w2": (DECAY, a), att + "time_value2_w1": (c, DECAY),
                        att + "time_value2_w2": (DECAY, a), att + "time_faaaa": (h, head_size)})
            for lin in ("receptance", "key", "value"):
                out[att + lin + ".weight"] = (a, c)
            out[att + "output.weight"] = (c, a)
            out[att + "ln_x.weight"] = out[att + "ln_x.bias"] = (a,)
        else:
            lora = max(c // 16, 64)
            for s in ("x", "q", "v_cache", "k", "v"):
                out[att + "time_maa_" + s] = vec
            out.update({att + "time_maa_q_w1": (c, MIX), att + "time_maa_q_w2": (MIX, c),
                        att + "time_maa_kv_w1": (c, 2 * MIX), att + "time_maa_kv_w2": (2, MIX, c),
                        att + "time_key_w1": (c, lora), att + "time_key_w2": (lora, a),
                        att + "time_value_w1": (c, lora), att + "time_value_w2": (lora, a),
                        att + "query.weight": (a, c), att + "output.weight": (c, a)})
            for ln in ("ln_q", "ln_k", "ln_v", "ln_x"):
                out[att + ln + ".weight"] = out[att + ln + ".bias"] = (a,)
        out.update({p + "ffn.time_maa_k": vec, p + "ffn.time_maa_r": vec, p + "ffn.key.weight": (ffn, c),
                    p + "ffn.receptance.weight": (c, c), p + "ffn.value.weight": (c, ffn)})
    out["ln_out.weight"] = out["ln_out.bias"] = (c,)
    out["head.weight"] = (vocab, c)
    if n_lower < n_layer:
        out["w_kv_cache_a.weight"] = (c // 16, c)
        out["w_kv_cache_b.weight"] = (a, c + c // 16)
    return out


C2, NO_ROPE = ["c2_one_minus_w=true", "c2_v2=true"], "gold_rope_theta=null"
# what import must be told: the reference's ablations have the same tensors as these kinds
SAY = {"goldfinch": [*C2, NO_ROPE], "finchc2": C2, "upgrade": [NO_ROPE], "finch": []}

CASES = {  # kind -> (layout args, what import must infer)
    "goldfinch": (dict(n_layer=4, n_embd=64, vocab=97, head_size=16),
                  dict(arch="goldfinch", lower_mixer="finch_c2", n_gold=2)),
    "finch": (dict(n_layer=3, n_embd=64, vocab=97, head_size=32),
              dict(arch="finch", lower_mixer="finch", n_gold=0)),
    "finchc2": (dict(n_layer=3, n_embd=64, vocab=97, head_size=16),
                dict(arch="finch", lower_mixer="finch_c2", n_gold=0)),
    "llama": (dict(n_layer=2, n_embd=64, vocab=97, head_size=16),
              dict(arch="llama", n_gold=0)),
    "upgrade": (dict(n_layer=6, n_embd=64, vocab=97, head_size=16, ratio=6),
                dict(arch="goldfinch", lower_mixer="finch", n_gold=1, gold_ratio=6)),
}


def random_reference(kind: str, dtype=torch.float32) -> dict[str, torch.Tensor]:
    layout = reference_layout(kind, **CASES[kind][0])
    g = torch.Generator().manual_seed(len(layout))
    return {k: (torch.randn(shape, generator=g) * 0.2).to(dtype) for k, shape in layout.items()}


def as_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("kind", list(CASES))
def test_import_infers_the_architecture_and_export_gives_the_same_bytes(tmp_path, kind):
    dtype = torch.bfloat16 if kind == "goldfinch" else torch.float32  # published files are bf16
    ref = random_reference(kind, dtype)
    torch.save(ref, tmp_path / "ref.pth")
    extra = ["head_size=16"] if kind == "llama" else SAY[kind]
    cfg = import_reference(tmp_path / "ref.pth", tmp_path / "ours", ["ctx_len=128", *extra])
    for key, value in CASES[kind][1].items():
        assert getattr(cfg, key) == value, key
    assert cfg.ctx_len == 128 and cfg.n_layer == CASES[kind][0]["n_layer"]
    assert cfg.cache_dtype == ("bfloat16" if dtype == torch.bfloat16 else "float32")  # the file's
    back = export_reference(tmp_path / "ours", tmp_path / "back.pth")
    loaded = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(loaded) == list(ref) == list(back)  # the reference's names, in its order
    for name, t in ref.items():
        assert loaded[name].dtype == t.dtype and loaded[name].shape == t.shape, name
        assert as_bytes(loaded[name]) == as_bytes(t), name
    model = load_exported(tmp_path / "ours")  # and the imported dir is a working model
    logits, _ = model(torch.randint(0, 97, (1, 9)))
    assert logits.shape == (1, 9, 97) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch, kw", [("goldfinch", {}), ("finch", {}), ("llama", {}),
                                      ("goldfinch", dict(lower="finch", gold_ratio=6)),
                                      ("goldfinch", dict(gold_rope_theta=10000.0))])
def test_export_then_import_gives_bitwise_the_same_logits(tmp_path, arch, kw):
    model = tiny_model(arch, mix_lora_rank=32, decay_lora_rank=64, **kw).eval()
    sd = {**model.state_dict()}
    save_exported(sd, model.cfg, tmp_path / "ours")
    ref = export_reference(tmp_path / "ours", tmp_path / "ref.pth")
    assert set(ref) == set(reference_layout(
        "upgrade" if kw.get("lower") == "finch" else arch,
        n_layer=6, n_embd=64, vocab=97, head_size=16, ratio=model.cfg.gold_ratio))
    overrides = [f"{k}={v}" for k, v in kw.items() if k == "gold_rope_theta"]
    overrides += ["head_size=16"] if arch == "llama" else []
    overrides += C2 if model.cfg.lower_mixer == "finch_c2" else []
    overrides += [] if "gold_rope_theta" in kw or not model.cfg.n_gold else [NO_ROPE]
    cfg = import_reference(tmp_path / "ref.pth", tmp_path / "again", ["cache_dtype=float32", *overrides])
    assert (cfg.arch, cfg.lower_mixer, cfg.n_gold, cfg.gold_rope_theta) == (
        model.cfg.arch, model.cfg.lower_mixer, model.cfg.n_gold, model.cfg.gold_rope_theta)
    again = load_exported(tmp_path / "again").eval()
    idx = torch.randint(0, 97, (2, 21))
    with torch.no_grad():
        assert torch.equal(again(idx)[0], model(idx)[0])


def _write(path, obj):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("problem, needle", [
    ("unknown", "unknown key(s) for the inferred architecture: blocks.1.att.time_maa_extra"),
    ("missing", "missing key(s): blocks.1.att.time_decay_w2"),
    ("shape", "blocks.1.att.key.weight is (32, 64), expected (64, 64)"),
    ("no_emb", "missing key 'emb.weight'"),
    ("not_a_dict", "holds a list, not a state dict of named tensors"),
    ("not_tensors", "holds a dict, not a state dict of named tensors"),
    ("truncated", "not a readable PyTorch state dict"),
    ("code", "not a readable PyTorch state dict"),
    ("absent", "no such file"),
])
def test_bad_reference_checkpoints_fail_with_one_line_and_write_nothing(tmp_path, capsys, problem, needle):
    ref = random_reference("goldfinch")
    src = tmp_path / "ref.pth"
    if problem == "unknown":
        ref["blocks.1.att.time_maa_extra"] = torch.zeros(1, 1, 64)
    elif problem == "missing":
        del ref["blocks.1.att.time_decay_w2"]
    elif problem == "shape":
        ref["blocks.1.att.key.weight"] = torch.zeros(32, 64)
    elif problem == "no_emb":
        del ref["emb.weight"]
    if problem == "not_a_dict":
        _write(src, [torch.zeros(2)])
    elif problem == "not_tensors":
        _write(src, {"emb.weight": 3})
    elif problem == "code":
        import datetime
        _write(src, {"emb.weight": datetime.date(2024, 7, 16)})  # a pickle that would build an object
    elif problem != "absent":
        _write(src, ref)
    if problem == "truncated":
        src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    out = tmp_path / "out"
    assert convert_main(["import", str(src), "--out", str(out), *SAY["goldfinch"]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(src) in err and needle in err, err
    assert not out.exists() or not any(out.iterdir())


def test_export_needs_an_exported_dir_and_import_rejects_stray_arguments(tmp_path, capsys):
    assert convert_main(["export", str(tmp_path), "--out", str(tmp_path / "x.pth")]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()
    with pytest.raises(SystemExit):
        convert_main(["import", "a.pth", "--out", str(tmp_path / "o"), "--frobnicate"])


def test_overrides_are_validated(tmp_path, capsys):
    torch.save(random_reference("finch"), tmp_path / "ref.pth")
    assert convert_main(["import", str(tmp_path / "ref.pth"), "--out", str(tmp_path / "o"),
                         "ctx_len=0"]) == 2
    assert "model.ctx_len=0" in capsys.readouterr().err
    assert convert_main(["import", str(tmp_path / "ref.pth"), "--out", str(tmp_path / "o"),
                         "ctx_lenn=5"]) == 2
    err = capsys.readouterr().err
    assert "ctx_lenn" in err and "bad key=value override" in err, err


def test_meta_built_layout_matches_for_the_paper_sizes():
    """The L24-D2048 GoldFinch maps onto the reference's keys and shapes (no data allocated)."""
    from model import load_model_config
    from model.convert import to_reference

    cfg = load_model_config("L24-D2048")
    model = build_model(cfg, device="meta")
    ref = to_reference(cfg, model.state_dict())
    expected = reference_layout("goldfinch", 24, 2048, 65536, 64)
    assert {k: tuple(v.shape) for k, v in ref.items()} == expected


@pytest.mark.parametrize("kind, say, needle", [
    ("goldfinch", [NO_ROPE], "c2_one_minus_w=true|false c2_v2=true|false"),
    ("finchc2", ["c2_v2=true"], "no_one_minus_w and no_v2"),
    ("upgrade", [], "gold_rope_theta=null (no RoPE in GOLD, the paper's main) or gold_rope_theta=10000"),
])
def test_lookalike_checkpoints_are_refused_until_told(tmp_path, capsys, kind, say, needle):
    torch.save(random_reference(kind), tmp_path / "ref.pth")
    out = tmp_path / "out"
    assert convert_main(["import", str(tmp_path / "ref.pth"), "--out", str(out), *say]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ref.pth" in err and needle in err, err
    assert not out.exists()


def test_finch_c2_ablations_and_rope10k_compute_differently(tmp_path):
    """Same tensors, other computations: no_v2 reads the bonus and not v2, no_one_minus_w leaves
    the keys unscaled, rope10k rotates GOLD's queries and keys."""
    torch.save(random_reference("goldfinch"), tmp_path / "ref.pth")
    idx = torch.randint(0, 97, (2, 13))

    def logits(*say):
        out = tmp_path / "_".join(say).replace("=", "-")
        import_reference(tmp_path / "ref.pth", out, ["cache_dtype=float32", *say])
        model = load_exported(out).eval()
        with torch.no_grad():
            return model, model(idx)[0]
    _, main = logits(*C2, NO_ROPE)
    no_v2, got = logits("c2_one_minus_w=true", "c2_v2=false", NO_ROPE)
    assert not torch.allclose(got, main) and no_v2.blocks[0].att.bonus.requires_grad
    with torch.no_grad():
        no_v2.blocks[0].att.v2_lora.b.add_(1.0)  # v2 is not read
        assert torch.equal(no_v2(idx)[0], got)
    assert not torch.allclose(logits("c2_one_minus_w=false", "c2_v2=true", NO_ROPE)[1], main)
    assert not torch.allclose(logits(*C2, "gold_rope_theta=10000")[1], main)
    back = export_reference(tmp_path / "c2_one_minus_w-true_c2_v2-false_gold_rope_theta-null",
                            tmp_path / "back.pth")
    ref = torch.load(tmp_path / "ref.pth", weights_only=True)
    assert list(back) == list(ref) and all(torch.equal(back[k], ref[k]) for k in ref)
