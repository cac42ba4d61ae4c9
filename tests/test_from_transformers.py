"""Students from a transformer teacher (model.convert from-transformers): what is copied, how the
attention maps land in the mixers, RoPE, and the model keys that give a student the teacher's
block shape. Tiny random teachers built from transformers configs; nothing is downloaded."""
import hashlib
import json

import pytest
import torch

from model import build_model
from model.convert import ConvertError, export_reference, from_transformers
from model.convert.__main__ import main
from model.exported import load_exported, save_exported
from model.rope import rope_tokens
from tests.model_helpers import tiny_config, tiny_model

transformers = pytest.importorskip("transformers")

STUDENTS = {  # name -> key=value overrides
    "goldfinch": ["arch=goldfinch", "lower=finch_c2"],
    "goldfinch7": ["arch=goldfinch", "lower=rwkv7"],
    "finch": ["arch=finch"],
    "rwkv7": ["arch=rwkv7"],
    "eagle": ["arch=finch", "lower=eagle"],
}


def _digests(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _tokenizer(path):
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]")).save(str(path))


def _randomise(model):
    """HF initialises biases and norms to constants: random values make every copy visible."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    """Qwen2: q/k/v biases, 4 query heads over 2 kv heads, tied head, a tokenizer.json."""
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=256, hidden_size=64, num_attention_heads=4,
                                   num_key_value_heads=2, num_hidden_layers=3,
                                   intermediate_size=128, tie_word_embeddings=True,
                                   max_position_embeddings=512, rms_norm_eps=1e-5)
    model = transformers.Qwen2ForCausalLM(cfg)
    _randomise(model)
    path = tmp_path_factory.mktemp("qwen2")
    model.save_pretrained(path)
    _tokenizer(path / "tokenizer.json")
    return path


@pytest.fixture(scope="module")
def llama_hf_dir(tmp_path_factory):
    """An HF Llama in bf16, untied, no biases, sharded, with no tokenizer."""
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=64, num_attention_heads=4,
                                   num_key_value_heads=2, num_hidden_layers=2,
                                   intermediate_size=128, attention_bias=False,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    _randomise(model)
    path = tmp_path_factory.mktemp("llama_hf")
    model.save_pretrained(path, max_shard_size="100KB")
    return path


@pytest.fixture(scope="module")
def ours_dir(tmp_path_factory):
    torch.manual_seed(2)
    model = tiny_model("llama", n_layer=3)
    path = tmp_path_factory.mktemp("ours")
    save_exported(model.state_dict(), model.cfg, path)
    return path


def _student(teacher, tmp_path, overrides, rope=False):
    out = tmp_path / "student"
    cfg = from_transformers(teacher, out, overrides, rope=rope)
    return cfg, out, load_exported(out)


def _hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                            dtype=torch.float32)


def _repeat(t, n_rep):
    return t.reshape(2, -1, *t.shape[1:]).repeat_interleave(n_rep, dim=0).reshape(-1, *t.shape[1:])


@pytest.mark.parametrize("student", list(STUDENTS))
def test_qwen2_tensors_are_copied_and_teacher_untouched(qwen2_dir, tmp_path, student):
    before = _digests(qwen2_dir)
    cfg, out, model = _student(qwen2_dir, tmp_path, STUDENTS[student])
    assert _digests(qwen2_dir) == before
    from safetensors.torch import load_file
    teacher = load_file(str(qwen2_dir / "model.safetensors"))
    sd = model.state_dict()
    assert cfg.norm == "rmsnorm" and cfg.norm_eps == 1e-5 and not cfg.emb_norm and cfg.att_bias
    assert torch.equal(sd["emb.weight"], teacher["model.embed_tokens.weight"])
    assert torch.equal(sd["head.weight"], teacher["model.embed_tokens.weight"])  # tied: a copy
    assert model.head.weight.data_ptr() != model.emb.weight.data_ptr()
    assert torch.equal(sd["ln_out.weight"], teacher["model.norm.weight"])
    for i in range(cfg.n_layer):
        pre, att = f"model.layers.{i}.", f"blocks.{i}.att."
        assert torch.equal(sd[f"blocks.{i}.ln1.weight"], teacher[pre + "input_layernorm.weight"])
        assert torch.equal(sd[f"blocks.{i}.ln2.weight"], teacher[pre + "post_attention_layernorm.weight"])
        for ours, theirs in (("gate", "gate"), ("up", "up"), ("down", "down")):
            assert torch.equal(sd[f"blocks.{i}.ffn.{ours}.weight"], teacher[f"{pre}mlp.{theirs}_proj.weight"])
        q = {k: teacher[f"{pre}self_attn.q_proj.{k}"] for k in ("weight", "bias")}
        if cfg.block_mixer(i) == "gold":
            assert torch.equal(sd[att + "query.weight"], q["weight"])
            assert torch.equal(sd[att + "query.bias"], q["bias"])
        else:
            for ours, theirs in (("receptance", "q"), ("key", "k"), ("value", "v")):
                for kind in ("weight", "bias"):
                    t = teacher[f"{pre}self_attn.{theirs}_proj.{kind}"]
                    assert torch.equal(sd[f"{att}{ours}.{kind}"], _repeat(t, 2) if theirs != "q" else t)
        assert torch.equal(sd[att + "output.weight"], teacher[f"{pre}self_attn.o_proj.weight"])
    assert (out / "tokenizer.json").read_bytes() == (qwen2_dir / "tokenizer.json").read_bytes()
    record = json.loads((out / "teacher.json").read_text())
    assert record["model_type"] == "qwen2"
    assert record["weights"] == {"model.safetensors": before["model.safetensors"]}


def test_bf16_sharded_llama_keeps_dtype_and_untied_head(llama_hf_dir, tmp_path, capsys):
    assert (llama_hf_dir / "model.safetensors.index.json").is_file()
    before = _digests(llama_hf_dir)
    out = tmp_path / "student"
    assert main(["from-transformers", str(llama_hf_dir), "--out", str(out), "arch=finch"]) == 0
    assert "data.tokenizer" in capsys.readouterr().out  # no tokenizer.json to copy
    assert _digests(llama_hf_dir) == before and not (out / "tokenizer.json").exists()
    from safetensors.torch import load_file
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}
    model = load_exported(out, dtype=torch.bfloat16)
    teacher = _hf(llama_hf_dir).to(torch.bfloat16)
    assert not model.cfg.att_bias and model.blocks[0].att.key.bias is None
    assert torch.equal(model.emb.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(model.head.weight, teacher.lm_head.weight)
    assert torch.equal(model.blocks[1].att.key.weight, _repeat(teacher.model.layers[1].self_attn.k_proj.weight, 2))


def _teacher_attention(layers, att_of):
    outs, hooks = {}, []
    for i, layer in enumerate(layers):
        hooks.append(att_of(layer).register_forward_hook(
            lambda mod, args, output, i=i: outs.__setitem__(i, output[0])))
    return outs, hooks


def _student_logits_with(student, outs, idx):
    hooks = [block.att.register_forward_hook(
        lambda mod, args, output, i=i: (outs[i], output[1])) for i, block in enumerate(student.blocks)]
    try:
        return student(idx)[0]
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("student", ["goldfinch", "goldfinch7"])
def test_student_with_teacher_attention_gives_teacher_logits_qwen2(qwen2_dir, tmp_path, student):
    """Norms, eps, MLP, head, embeddings and the missing ln0 are right: with each time mix's
    output swapped for the teacher's attention output, the logits are the teacher's."""
    _, _, model = _student(qwen2_dir, tmp_path, STUDENTS[student])
    teacher = _hf(qwen2_dir)
    idx = torch.randint(0, 256, (2, 12))
    outs, hooks = _teacher_attention(teacher.model.layers, lambda layer: layer.self_attn)
    with torch.no_grad():
        want = teacher(idx).logits
        for h in hooks:
            h.remove()
        got = _student_logits_with(model, outs, idx)
        plain = model(idx)[0]
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(plain, want, atol=1e-2)  # the swap is what makes them equal


def test_student_with_teacher_attention_gives_teacher_logits_ours(ours_dir, tmp_path):
    cfg, _, model = _student(ours_dir, tmp_path, ["arch=goldfinch"])
    teacher = load_exported(ours_dir)
    assert cfg.norm == "layernorm" and cfg.emb_norm and torch.equal(model.ln0.weight, teacher.ln0.weight)
    idx = torch.randint(0, cfg.vocab_size, (2, 10))
    outs, hooks = _teacher_attention(teacher.blocks, lambda block: block.att)
    with torch.no_grad():
        want = teacher(idx)[0]
        for h in hooks:
            h.remove()
        got = _student_logits_with(model, outs, idx)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    att = model.blocks[0].att
    q, k, v = teacher.blocks[0].att.qkv.weight.chunk(3)
    assert torch.equal(att.receptance.weight, q) and torch.equal(att.key.weight, k)
    assert torch.equal(att.value.weight, v)


def _hf_scores(teacher, x):
    """Per query head: the teacher's RoPE'd q·k over positions, [H, T, T]."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    att, t = teacher.model.layers[0].self_attn, x.shape[1]
    q = att.q_proj(x).view(1, t, 4, 16).transpose(1, 2)
    k = att.k_proj(x).view(1, t, 2, 16).transpose(1, 2)
    cos, sin = teacher.model.rotary_emb(x, torch.arange(t).unsqueeze(0))
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q[0] @ k[0].repeat_interleave(2, dim=0).transpose(-1, -2)


def test_rope_scores_equal_teachers(qwen2_dir, tmp_path):
    """--rope: the student's rotated r·k per head equals the teacher's rotated q·k (HF rotates
    halves, we rotate adjacent pairs: the rows are interleaved on the way)."""
    cfg, _, model = _student(qwen2_dir, tmp_path, ["arch=goldfinch"], rope=True)
    teacher = _hf(qwen2_dir)
    assert cfg.rk_rope_theta == 10000.0
    x = torch.randn(1, 9, 64)
    with torch.no_grad():
        want = _hf_scores(teacher, x)
        r, k = model.blocks[0].att.receptance_key({"r": x, "k": x}, 0)
        got = r.view(9, 4, 16).transpose(0, 1) @ k.view(9, 4, 16).permute(1, 2, 0)
        _, _, plain = _student(qwen2_dir, tmp_path / "plain", ["arch=goldfinch"])
        r0, k0 = plain.blocks[0].att.receptance_key({"r": x, "k": x}, 0)
        unrotated = r0.view(9, 4, 16).transpose(0, 1) @ k0.view(9, 4, 16).permute(1, 2, 0)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(unrotated, want, atol=1e-2)


def test_gold_query_is_interleaved_only_under_gold_rope(qwen2_dir, tmp_path):
    cfg, _, model = _student(qwen2_dir, tmp_path, ["arch=goldfinch", "gold_rope_theta=10000"])
    from safetensors.torch import load_file
    teacher = load_file(str(qwen2_dir / "model.safetensors"))
    order = torch.tensor([0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15])
    for i in range(cfg.n_layer):
        q = teacher[f"model.layers.{i}.self_attn.q_proj.weight"]
        att = model.blocks[i].att
        if cfg.block_mixer(i) == "gold":
            assert torch.equal(att.query.weight, q.view(4, 16, 64)[:, order].reshape(64, 64))
        else:  # no RoPE on r and k: the recurrent maps are not permuted
            assert torch.equal(att.receptance.weight, q)


@pytest.mark.parametrize("arch", ["goldfinch", "finch", "rwkv7", "goldfinch7", "eagle"])
def test_rk_rope_chunked_equals_whole(arch):
    torch.manual_seed(3)
    model = tiny_model(arch, n_layer=3, rk_rope_theta=500.0, att_bias=True, norm="rmsnorm",
                       norm_eps=1e-5, emb_norm=False)
    idx = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        whole = model(idx)[0]
        first, state = model(idx[:, :6])
        second, _ = model(idx[:, 6:], state)
        plain = build_model(tiny_config(arch, n_layer=3, att_bias=True, norm="rmsnorm",
                                        norm_eps=1e-5, emb_norm=False))
        plain.load_state_dict(model.state_dict())
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=0)
    assert not torch.allclose(plain(idx)[0], whole, atol=1e-4)  # RoPE changes what is computed


def test_transformer_shape_keys():
    model = build_model(tiny_config("goldfinch", norm="rmsnorm", norm_eps=1e-5, emb_norm=False,
                                    att_bias=True))
    assert isinstance(model.ln0, torch.nn.Identity) and "ln0.weight" not in model.state_dict()
    assert model.ln_out.eps == 1e-5 and model.blocks[0].ln1.eps == 1e-5
    assert torch.count_nonzero(model.blocks[0].att.key.bias) == 0
    assert model.blocks[-1].att.query.bias is not None
    from pipeline.training.freezing import select
    assert "ln_out.weight" in select(model, "norms")
    plain = build_model(tiny_config("goldfinch"))
    assert plain.ln_out.eps == 1e-5 and plain.blocks[0].att.key.bias is None


@pytest.mark.parametrize("fields, key", [
    (dict(norm_eps=0.0), "model.norm_eps"),
    (dict(emb_norm="no"), "model.emb_norm"),
    (dict(att_bias=1), "model.att_bias"),
    (dict(rk_rope_theta=-1.0), "model.rk_rope_theta"),
    (dict(arch="llama", rk_rope_theta=10000.0), "model.rk_rope_theta"),
    (dict(rk_rope_theta=10000.0, n_embd=66, head_size=11, dim_att=66, kv_compression=11),
     "model.head_size"),
])
def test_transformer_shape_keys_are_validated(fields, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        tiny_config(fields.pop("arch", "goldfinch"), **fields)


@pytest.mark.parametrize("fields, key", [(dict(att_bias=True), "model.att_bias"),
                                         (dict(rk_rope_theta=1e4), "model.rk_rope_theta"),
                                         (dict(emb_norm=False), "model.emb_norm"),
                                         (dict(norm_eps=1e-6), "model.norm_eps")])
def test_reference_export_refuses_what_it_cannot_hold(tmp_path, fields, key, capsys):
    model = build_model(tiny_config("goldfinch", **fields))
    save_exported(model.state_dict(), model.cfg, tmp_path / "m")
    with pytest.raises(ConvertError, match=key):
        export_reference(tmp_path / "m", tmp_path / "x.pth")
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "x.pth")]) == 2
    assert key in capsys.readouterr().err and not (tmp_path / "x.pth").exists()


def test_cli_refuses_bad_teachers(tmp_path, qwen2_dir, capsys):
    missing = tmp_path / "nope"
    assert main(["from-transformers", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert main(["from-transformers", str(gpt2), "--out", str(tmp_path / "o")]) == 2
    assert "llama, qwen2" in capsys.readouterr().err
    assert main(["from-transformers", str(qwen2_dir), "--out", str(qwen2_dir / "s")]) == 2
    assert "never written" in capsys.readouterr().err and not (qwen2_dir / "s").exists()


def test_refuses_unrepresentable_teacher(tmp_path, qwen2_dir):
    odd = tmp_path / "scaled"
    odd.mkdir()
    for f in qwen2_dir.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    raw = json.loads((odd / "config.json").read_text())
    raw["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (odd / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConvertError, match="yarn"):
        from_transformers(odd, tmp_path / "s", [], rope=True)
    raw["hidden_act"] = "gelu"
    (odd / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConvertError, match="hidden_act"):
        from_transformers(odd, tmp_path / "s", [])


def test_students_are_reproducible_and_seeded(qwen2_dir, tmp_path):
    """The same teacher and seed give the same bytes (what is not copied is seeded); another seed
    changes only what is initialised, never what is copied."""
    def digest(path):
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        from_transformers(qwen2_dir, tmp_path / name, ["arch=goldfinch"], seed=seed)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    a, c = load_exported(tmp_path / "a").state_dict(), load_exported(tmp_path / "c").state_dict()
    assert torch.equal(a["emb.weight"], c["emb.weight"])
    assert torch.equal(a["blocks.0.att.receptance.weight"], c["blocks.0.att.receptance.weight"])
