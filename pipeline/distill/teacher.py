"""The frozen teacher: a local Hugging Face causal LM or an exported model of ours.

It gives what the losses need and nothing more: its final normed features and head (the KL is
chunked from them, never from whole logits) and, for the align stage, each layer's attention
output (caught by forward hooks on the attention modules). The teacher is read, never written.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PipelineError


@dataclass
class TeacherOutput:
    hidden: torch.Tensor                  # [B, T, C_t] final normed features
    attention: list[torch.Tensor] | None  # per layer [B, T, C_t]: its attention's output


@dataclass
class TeacherInfo:
    """What a teacher dir says about itself, read without loading its weights."""
    path: Path
    kind: str        # "hf" | "ours"
    n_layer: int
    n_embd: int
    vocab_size: int
    tokenizer: Path | None  # its tokenizer.json, if it has one


def describe(path: str | Path) -> TeacherInfo:
    """Read the teacher's config, or raise a PipelineError naming distill.teacher."""
    path = Path(path)
    where = f"distill.teacher={path}"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise PipelineError(f"{where}: no readable config.json ({err}); expected a Hugging Face "
                            "causal-LM dir or an exported model dir of ours") from None
    tokenizer = path / "tokenizer.json"
    tokenizer = tokenizer if tokenizer.is_file() else None
    if "model_type" in config:
        text = config.get("text_config", config)
        return TeacherInfo(path, "hf", text["num_hidden_layers"], text["hidden_size"],
                           text["vocab_size"], tokenizer)
    if "arch" in config:
        return TeacherInfo(path, "ours", config["n_layer"], config["n_embd"], config["vocab_size"],
                           tokenizer)
    raise PipelineError(f"{where}: config.json names neither a Hugging Face model_type nor one of "
                        "our archs")


def _load_hf(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    minor = int(transformers.__version__.split(".")[1])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, **{key: dtype})
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(f"distill.teacher={path}: transformers could not load it offline: "
                            f"{err}") from None


class Teacher:
    """`teacher(idx, attention=False)` -> TeacherOutput, under no_grad; `teacher.head()` is its
    output matrix [V_t, C_t] (inside `head_gathered()` when ZeRO-3 partitions the teacher)."""

    def __init__(self, info: TeacherInfo, device: torch.device, dtype: torch.dtype):
        self.info = info
        if info.kind == "hf":
            self.module = _load_hf(info.path, dtype)
            self._attn_modules = [layer.self_attn for layer in self.module.model.layers]
        else:
            from model.exported import load_exported
            self.module = load_exported(info.path, dtype=dtype)
            self._attn_modules = [block.att for block in self.module.blocks]
        self.module.requires_grad_(False).eval().to(device)
        self.engine = None

    def partition(self, cfg_train) -> None:
        """Under ZeRO-3 partition the teacher's weights over the ranks as well, so that a large
        teacher fits beside its student (DeepSpeed inference-only engine: no optimizer)."""
        import deepspeed

        config = {"train_micro_batch_size_per_gpu": cfg_train.micro_batch,
                  "zero_optimization": {"stage": 3},
                  "bf16": {"enabled": cfg_train.precision == "bf16"}}
        self.engine, *_ = deepspeed.initialize(model=self.module, config=config)
        self.engine.eval()

    def head(self) -> torch.nn.Parameter:
        return (self.module.lm_head if self.info.kind == "hf" else self.module.head).weight

    def head_gathered(self):
        """A context in which head() is whole (collective under ZeRO-3: every rank enters it)."""
        if self.engine is None:
            return contextlib.nullcontext()
        import deepspeed
        return deepspeed.zero.GatheredParameters([self.head()])

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, attention: bool = False) -> TeacherOutput:
        caught: dict[int, torch.Tensor] = {}
        hooks = [m.register_forward_hook(lambda _m, _a, out, i=i: caught.__setitem__(i, out[0]))
                 for i, m in enumerate(self._attn_modules)] if attention else []
        try:
            if self.info.kind == "hf":
                hidden = self.module.model(input_ids=idx, use_cache=False).last_hidden_state
            else:
                hidden, _ = self.module(idx, return_hidden=True)
        finally:
            for hook in hooks:
                hook.remove()
        layers = [caught[i] for i in range(len(self._attn_modules))] if attention else None
        return TeacherOutput(hidden, layers)
