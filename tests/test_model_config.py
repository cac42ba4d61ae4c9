import pytest

from model import ModelConfig, build_model, load_model_config


@pytest.mark.parametrize("kw, needle", [
    (dict(arch="mamba"), "model.arch='mamba'"),
    (dict(n_embd=100, head_size=64), "model.n_embd=100"),
    (dict(n_embd=72, head_size=8, kv_compression=16), "kv_compression=16"),
    (dict(gold_ratio=0), "model.gold_ratio=0"),
    (dict(ctx_len=0), "model.ctx_len=0"),
    (dict(ctx_len=-5), "model.ctx_len=-5"),
    (dict(n_layer=1, gold_ratio=3), "no recurrent block below GOLD"),
    (dict(cache_dtype="int8"), "model.cache_dtype='int8'"),
    (dict(lower="mamba"), "model.lower='mamba'"),
    (dict(arch="llama", lower="finch"), "no recurrent blocks"),
    (dict(arch="finch", gold_rope_theta=1e4), "only GoldFinch"),
    (dict(gold_rope_theta=-1.0), "model.gold_rope_theta=-1.0"),
])
def test_bad_config_names_the_value(kw, needle):
    with pytest.raises(ValueError) as err:
        ModelConfig(**kw)
    assert needle in str(err.value)


def test_unset_vocab_is_refused_at_build():
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(ModelConfig(n_layer=3, n_embd=64, head_size=16))


def test_overrides_merge_and_unknown_keys_fail():
    cfg = load_model_config("goldfinch-tiny", ["model.n_layer=9", "vocab_size=500"])
    assert (cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.n_gold, cfg.n_finch) == (9, 256, 500, 3, 6)
    with pytest.raises(Exception, match="n_layerz"):
        load_model_config("goldfinch-tiny", ["model.n_layerz=9"])
    with pytest.raises(Exception, match="n_layer"):
        load_model_config("goldfinch-tiny", ["model.n_layer=many"])
    with pytest.raises(FileNotFoundError, match="no-such-preset"):
        load_model_config("no-such-preset")


@pytest.mark.parametrize("n_layer, ratio, n_finch", [
    (12, 3, 8), (24, 3, 16), (4, 3, 2), (5, 3, 3), (12, 6, 10), (6, 6, 5), (7, 2, 3), (2, 3, 1)])
def test_layer_split_is_the_references(n_layer, ratio, n_finch):
    """The reference makes the lower int(L*(r-1)/r) blocks recurrent: the GOLD count rounds up."""
    cfg = ModelConfig(n_layer=n_layer, gold_ratio=ratio, n_embd=64, head_size=16, vocab_size=10)
    assert (cfg.n_finch, cfg.n_gold) == (n_finch, n_layer - n_finch)
    model = build_model(cfg, device="meta")
    assert [b.kind for b in model.blocks] == ["finch"] * n_finch + ["gold"] * (n_layer - n_finch)


def test_derived_widths():
    cfg = ModelConfig(n_layer=12, n_embd=64, head_size=16, vocab_size=10)
    assert cfg.ffn_width == 224 and cfg.compressed_width == 4  # int(3.5 C) // 32 * 32, C / 16
    # the paper's SwiGLU width rounds down to a multiple of 32: 768 -> 2048, 256 -> 672, 100 -> 256
    for n_embd, width in ((768, 2048), (256, 672), (96, 256)):
        assert ModelConfig(arch="llama", n_embd=n_embd, head_size=32).ffn_width == width


@pytest.mark.parametrize("arch, lower, mixers", [
    ("goldfinch", None, {"FinchC2TimeMix", "GoldTimeMix"}),
    ("goldfinch", "finch", {"FinchTimeMix", "GoldTimeMix"}),
    ("finch", None, {"FinchTimeMix"}),
    ("finch", "finch_c2", {"FinchC2TimeMix"}),
])
def test_lower_picks_the_registered_mixer(arch, lower, mixers):
    cfg = ModelConfig(arch=arch, lower=lower, n_layer=6, n_embd=64, head_size=16, vocab_size=10)
    model = build_model(cfg, device="meta")
    assert {type(b.att).__name__ for b in model.blocks} == mixers


def test_tiny_presets_are_cpu_sized_and_matched():
    counts = {}
    for arch in ("goldfinch", "finch", "llama"):
        cfg = load_model_config(f"{arch}-tiny", ["vocab_size=16384"])
        assert cfg.arch == arch
        counts[arch] = build_model(cfg, device="meta").num_params()
    print(counts)
    assert all(5e6 <= n <= 15e6 for n in counts.values())
    assert max(counts.values()) / min(counts.values()) < 1.10


def test_paper_presets_have_the_paper_shapes():
    small, large = load_model_config("L12-D768"), load_model_config("L24-D2048")
    assert (small.n_layer, small.n_embd, small.n_gold) == (12, 768, 4)
    assert (large.n_layer, large.n_embd, large.n_gold, large.vocab_size) == (24, 2048, 8, 65536)
    n = build_model(large, device="meta").num_params()
    print("L24-D2048 goldfinch params", n)
    assert 1.3e9 < n < 1.7e9
