"""Read a transformer teacher for distillation: its shape, and its tensors under our names.

A teacher is a local Hugging Face causal-LM dir (config.json + safetensors, single or sharded;
read offline with safetensors, no model code runs) of a supported family, or an exported model dir
of ours with arch=llama. Nothing is ever written into the teacher's dir.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from .infer import ConvertError

SUPPORTED = ("llama", "qwen2")  # Hugging Face model_type values whose layout we read
MAX_CTX = 4096  # a student's default ctx_len: the teacher's context, capped here


@dataclass
class Teacher:
    """What a student copies. `shared` holds tensors under the student's own names (embeddings,
    norms, channel mixes, head); `attention[i]` holds layer i's q/k/v/o (`q.weight`, `q.bias`,
    ...) as the teacher has them: k and v with its own (grouped) head count, q and k in its own
    RoPE pairing (`rope_halves`: dim i pairs with i + hd/2, as Hugging Face rotates)."""

    path: Path
    model_type: str
    source: str                      # transformers | exported
    fields: dict                     # the student's ModelConfig fields the teacher decides
    n_head: int
    n_kv_head: int
    rope_theta: float
    rope_halves: bool
    rope_unsupported: str | None     # why our RoPE cannot reproduce the teacher's (scaling, ...)
    weight_files: list[Path]
    shared: dict[str, torch.Tensor] = field(default_factory=dict)
    attention: list[dict[str, torch.Tensor]] = field(default_factory=list)

    @property
    def dtype(self) -> torch.dtype:
        return self.shared["emb.weight"].dtype

    @property
    def tokenizer(self) -> Path | None:
        path = self.path / "tokenizer.json"
        return path if path.is_file() else None

    def fingerprint(self) -> dict:
        """The teacher's path, family and the sha256 of each weight file (teacher.json)."""
        return {"teacher": str(self.path.resolve()), "model_type": self.model_type,
                "source": self.source, "weights": {p.name: sha256(p) for p in self.weight_files}}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def read_teacher(path: str | Path) -> Teacher:
    """The teacher at `path`: a Hugging Face dir (config.json with model_type) or ours (arch)."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise ConvertError(f"{path}: no config.json: not a Hugging Face model dir nor an exported "
                           "model dir of ours")
    try:
        raw = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConvertError(f"{config}: not JSON ({err})") from None
    try:
        if "arch" in raw:
            return _read_ours(path, raw)
        return _read_hf(path, raw)
    except KeyError as err:
        raise ConvertError(f"{path}: missing {err.args[0]!r}") from None


def _hf_weights(path: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [path / s for s in shards]
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        raise ConvertError(f"{path}: no model.safetensors nor model.safetensors.index.json (only "
                           "safetensors checkpoints are read)")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise ConvertError(f"{f}: shard named by the index is missing")
        weights.update(load_file(str(f)))
    return weights, files


def _hf_rope(raw: dict) -> tuple[float, str | None]:
    """(rope base, why it is not plain RoPE or None): transformers 4 writes rope_theta and
    rope_scaling, transformers 5 rope_parameters."""
    params = raw.get("rope_parameters") or {}
    theta = raw.get("rope_theta") or params.get("rope_theta") or 10000.0
    scaling = raw.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type") or params.get("rope_type") or "default"
    why = None if kind == "default" else f"rope scaling {kind!r}"
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        why = f"partial_rotary_factor={raw['partial_rotary_factor']}"
    return float(theta), why


def _refuse_hf(path: Path, raw: dict, model_type: str) -> None:
    """Teachers whose blocks a student cannot reproduce."""
    if model_type not in SUPPORTED:
        raise ConvertError(f"{path}: model_type {model_type!r} is not supported; supported: "
                           f"{', '.join(SUPPORTED)}")
    if raw.get("hidden_act", "silu") != "silu":
        raise ConvertError(f"{path}: hidden_act={raw['hidden_act']!r}: the student's SwiGLU uses silu")
    if raw.get("mlp_bias"):
        raise ConvertError(f"{path}: mlp_bias=true: the student's SwiGLU has no biases")
    if model_type == "llama" and raw.get("attention_bias"):
        raise ConvertError(f"{path}: attention_bias=true puts a bias on o_proj too; the student's "
                           "output map has none")
    if raw.get("use_sliding_window"):
        raise ConvertError(f"{path}: use_sliding_window=true: sliding-window attention layers are "
                           "not supported")
    heads, hidden = raw["num_attention_heads"], raw["hidden_size"]
    if heads % raw.get("num_key_value_heads", heads):
        raise ConvertError(f"{path}: num_attention_heads={heads} is not a multiple of "
                           f"num_key_value_heads={raw['num_key_value_heads']}")
    if (raw.get("head_dim") or hidden // heads) % 2:
        raise ConvertError(f"{path}: head_dim is odd: RoPE needs an even head size")


def _read_hf(path: Path, raw: dict) -> Teacher:
    model_type = raw.get("model_type")
    _refuse_hf(path, raw, model_type)
    heads, kv = raw["num_attention_heads"], raw.get("num_key_value_heads", raw["num_attention_heads"])
    hidden, n_layer = raw["hidden_size"], raw["num_hidden_layers"]
    head_dim = raw.get("head_dim") or hidden // heads
    weights, files = _hf_weights(path)

    def get(name: str) -> torch.Tensor:
        if name not in weights:
            raise ConvertError(f"{path}: tensor {name!r} is missing from the checkpoint")
        return weights[name]

    emb = get("model.embed_tokens.weight")
    tied = raw.get("tie_word_embeddings", False) or "lm_head.weight" not in weights
    shared = {"emb.weight": emb, "ln_out.weight": get("model.norm.weight"),
              "head.weight": (emb if tied else get("lm_head.weight")).clone()}
    attention = []
    for i in range(n_layer):
        pre = f"model.layers.{i}."
        shared[f"blocks.{i}.ln1.weight"] = get(pre + "input_layernorm.weight")
        shared[f"blocks.{i}.ln2.weight"] = get(pre + "post_attention_layernorm.weight")
        for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            shared[f"blocks.{i}.ffn.{ours}.weight"] = get(f"{pre}mlp.{theirs}.weight")
        att = {f"{x}.weight": get(f"{pre}self_attn.{x}_proj.weight") for x in "qkvo"}
        if model_type == "qwen2":
            att.update({f"{x}.bias": get(f"{pre}self_attn.{x}_proj.bias") for x in "qkv"})
        attention.append(att)
    theta, why = _hf_rope(raw)
    fields = dict(n_layer=n_layer, n_embd=hidden, head_size=head_dim, dim_att=heads * head_dim,
                  dim_ffn=raw["intermediate_size"], vocab_size=emb.shape[0], cmix="swiglu",
                  norm="rmsnorm", norm_eps=float(raw.get("rms_norm_eps", 1e-6)), emb_norm=False,
                  att_bias=model_type == "qwen2",
                  ctx_len=min(raw.get("max_position_embeddings", MAX_CTX), MAX_CTX))
    return Teacher(path, model_type, "transformers", fields, heads, kv, theta, True, why, files,
                   shared, attention)


def _read_ours(path: Path, raw: dict) -> Teacher:
    from safetensors.torch import load_file

    try:
        cfg = ModelConfig(**raw)
    except (TypeError, ValueError) as err:
        raise ConvertError(f"{path / 'config.json'}: not a valid model config ({err})") from None
    if cfg.arch != "llama":
        raise ConvertError(f"{path}: an exported model of arch={cfg.arch}; a teacher of ours must "
                           "be a Llama (arch=llama)")
    weights_file = path / "model.safetensors"
    if not weights_file.is_file():
        raise ConvertError(f"{weights_file} is missing: not an exported model directory")
    sd = load_file(str(weights_file))
    shared = {k: v for k, v in sd.items() if k.startswith(("emb.", "ln0.", "ln_out.", "head."))
              or ".ln1." in k or ".ln2." in k or ".ffn." in k}
    attention = []
    for i in range(cfg.n_layer):
        pre = f"blocks.{i}.att."
        att = dict(zip(("q.weight", "k.weight", "v.weight"), sd[pre + "qkv.weight"].chunk(3)))
        if pre + "qkv.bias" in sd:
            att.update(zip(("q.bias", "k.bias", "v.bias"), sd[pre + "qkv.bias"].chunk(3)))
        att["o.weight"] = sd[pre + "output.weight"]
        attention.append(att)
    fields = dict(n_layer=cfg.n_layer, n_embd=cfg.n_embd, head_size=cfg.head_size,
                  dim_att=cfg.att_width, dim_ffn=cfg.ffn_width, vocab_size=cfg.vocab_size,
                  cmix=cfg.channel_mixer, norm=cfg.norm, norm_eps=cfg.norm_eps,
                  emb_norm=cfg.emb_norm, att_bias=cfg.att_bias, ctx_len=cfg.ctx_len)
    return Teacher(path, "llama", "exported", fields, cfg.n_head, cfg.n_head, cfg.rope_theta,
                   False, None, [weights_file], shared, attention)
