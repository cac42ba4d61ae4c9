"""A student for distillation, built from a transformer teacher (ARWKV / RADLADS initialisation).

The student keeps the teacher's block shape (RMSNorm with its eps, no norm on the embeddings,
SwiGLU, q/k/v biases) and copies, bitwise and in the teacher's dtype, its embeddings, norms, MLPs
and head (a tied head becomes the student's own copy). Each attention layer's q/k/v/o become the
student mixer's r/k/v/o in that layer (GOLD: query/output), grouped k/v heads repeated to the
query heads as Hugging Face's repeat_kv does. Everything else (decays, LoRAs, token-shift mixes,
GOLD's cache parts, the key compression) keeps our initialisation.

RoPE (`rope=True`, RADLADS) sets model.rk_rope_theta to the teacher's base. Hugging Face rotates
halves (dim i with i + hd/2) and we rotate adjacent pairs (2i, 2i+1) at the same frequencies, so
each head's q and k rows are interleaved (new 2i = old i, new 2i+1 = old i + hd/2): our rotation
of the permuted vector is then the teacher's rotation, permuted, and q·k is unchanged.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from common.errors import ConfigError

from ..config import ModelConfig, load_model_config
from .infer import CHECKPOINT_DTYPES, ConvertError
from .teacher import Teacher, read_teacher

RECURRENT_MAPS = {"receptance": "q", "key": "k", "value": "v", "output": "o"}
GOLD_MAPS = {"query": "q", "output": "o"}


def student_config(teacher: Teacher, overrides: list[str] | None, rope: bool) -> ModelConfig:
    """The teacher's shape, arch=goldfinch unless overridden, then the key=value overrides."""
    fields = dict(teacher.fields, arch="goldfinch")
    if teacher.dtype in CHECKPOINT_DTYPES:
        fields["cache_dtype"] = CHECKPOINT_DTYPES[teacher.dtype]
    if rope:
        if teacher.rope_unsupported:
            raise ConvertError(f"{teacher.path}: --rope asked, but the teacher's position "
                               f"encoding is not plain RoPE ({teacher.rope_unsupported})")
        fields["rk_rope_theta"] = teacher.rope_theta
    try:
        cfg = load_model_config(None, overrides, **fields)
    except ConfigError as err:
        raise ConvertError(f"bad key=value override: {err}") from None
    except ValueError as err:
        width = teacher.n_head * teacher.fields["head_size"]
        raise ConvertError(f"{teacher.path}: the student cannot be built: {err} (teacher: "
                           f"heads x head_dim = {width}, hidden_size = {teacher.fields['n_embd']})"
                           ) from None
    _check_student(teacher, cfg)
    return cfg


def _check_student(teacher: Teacher, cfg: ModelConfig) -> None:
    width = teacher.n_head * teacher.fields["head_size"]
    if cfg.arch == "llama":
        raise ConvertError("model.arch=llama: a student needs recurrent mixers (goldfinch, finch, "
                           "rwkv7)")
    if (cfg.n_layer, cfg.n_embd, cfg.head_size, cfg.att_width, cfg.vocab_size) != tuple(
            teacher.fields[k] for k in ("n_layer", "n_embd", "head_size", "dim_att", "vocab_size")):
        raise ConvertError("model.n_layer, n_embd, head_size, dim_att and vocab_size are the "
                           "teacher's; they cannot be overridden")
    if width != cfg.n_embd and (cfg.arch == "goldfinch" or cfg.lower_mixer == "rwkv7"):
        raise ConvertError(f"{teacher.path}: heads x head_dim = {width} differs from hidden_size = "
                           f"{cfg.n_embd}; arch={cfg.arch} lower={cfg.lower_mixer} needs them equal "
                           "(use arch=finch)")
    if teacher.attention[0].get("q.bias") is not None and not cfg.att_bias:
        raise ConvertError(f"{teacher.path}: the teacher has q/k/v biases: model.att_bias must be "
                           "true")


def _repeat_heads(t: torch.Tensor, n_kv: int, n_rep: int) -> torch.Tensor:
    """Rows of n_kv heads -> n_kv·n_rep heads, each kv head repeated n_rep times in place."""
    return t.reshape(n_kv, -1, *t.shape[1:]).repeat_interleave(n_rep, dim=0).reshape(
        -1, *t.shape[1:])


def _halves_to_pairs(t: torch.Tensor, head_size: int) -> torch.Tensor:
    """Each head's rows reordered so that new row 2i = old row i, 2i+1 = old row i + hd/2."""
    half = head_size // 2
    order = torch.arange(head_size).view(2, half).t().reshape(-1)
    heads = t.reshape(-1, head_size, *t.shape[1:])
    return heads[:, order].reshape(t.shape)


def mixer_tensors(teacher: Teacher, cfg: ModelConfig, layer: int) -> dict[str, torch.Tensor]:
    """Layer `layer`'s student mixer tensors (names under blocks.N.att.) from its attention."""
    att, mixer = teacher.attention[layer], cfg.block_mixer(layer)
    n_rep = teacher.n_head // teacher.n_kv_head
    rotated = cfg.gold_rope_theta if mixer == "gold" else cfg.rk_rope_theta
    permute = teacher.rope_halves and rotated is not None
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in (GOLD_MAPS if mixer == "gold" else RECURRENT_MAPS).items():
        for kind in ("weight", "bias"):
            t = att.get(f"{theirs}.{kind}")
            if t is None:
                continue
            if theirs in "kv" and n_rep > 1:
                t = _repeat_heads(t, teacher.n_kv_head, n_rep)
            if theirs in "qk" and permute:
                t = _halves_to_pairs(t, cfg.head_size)
            out[f"{ours}.{kind}"] = t
    return out


def student_state(teacher: Teacher, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our initialisation in the teacher's dtype, with the teacher's tensors copied in."""
    from ..build import build_model

    student = build_model(cfg)
    sd = {k: v.detach().to(teacher.dtype) for k, v in student.state_dict().items()}
    copied = dict(teacher.shared)
    for i in range(cfg.n_layer):
        copied.update({f"blocks.{i}.att.{k}": v for k, v in mixer_tensors(teacher, cfg, i).items()})
    for name, t in copied.items():
        if name not in sd or sd[name].shape != t.shape:
            got = tuple(sd[name].shape) if name in sd else "no such tensor"
            raise ConvertError(f"{teacher.path}: {name} {tuple(t.shape)} does not fit the student "
                               f"({got})")
        sd[name] = t.to(teacher.dtype).clone()
    return sd


def from_transformers(teacher_dir: str | Path, out_dir: str | Path,
                      overrides: list[str] | None = None, rope: bool = False) -> ModelConfig:
    """Write a student model dir (model.safetensors + config.json, as `import` writes; plus the
    teacher's tokenizer.json when it has one, and teacher.json) for the teacher at teacher_dir."""
    from ..exported import save_exported

    teacher_dir, out = Path(teacher_dir), Path(out_dir)
    if not teacher_dir.is_dir():
        raise ConvertError(f"{teacher_dir}: no such directory")
    if out.resolve() == teacher_dir.resolve() or teacher_dir.resolve() in out.resolve().parents:
        raise ConvertError(f"--out {out}: inside the teacher's dir, which is never written to")
    teacher = read_teacher(teacher_dir)
    cfg = student_config(teacher, overrides, rope)
    sd = student_state(teacher, cfg)
    fingerprint = dict(teacher.fingerprint(), rope=rope)
    save_exported(sd, cfg, out)
    if teacher.tokenizer is not None:
        shutil.copyfile(teacher.tokenizer, out / "tokenizer.json")
    (out / "teacher.json").write_text(json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")
    return cfg

