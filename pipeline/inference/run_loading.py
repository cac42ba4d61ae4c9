"""Load a trained model for inference: from a run's checkpoint or from an exported model dir.

evaluate, generate and compare all go through here, so "the run's model", its step and its
tokenizer mean the same thing everywhere. Every failure is a FileNotFoundError or ValueError whose
message names the path that is wrong, for the CLIs to print as one line.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from common.errors import UserError

from model import LanguageModel, ModelConfig, build_model, load_exported
from model.bone import merge_state_dict

from .. import runs
from ..training.init_from import checkpoint_weights


@dataclass
class LoadedModel:
    model: LanguageModel  # fp32, eval mode, on CPU
    run_dir: Path | None  # the run it came from, when known
    run_cfg: DictConfig | None  # that run's resolved config.yaml
    step: int | None  # checkpoint step; None for an export whose step is unknown
    source: Path  # the checkpoint or export dir the weights were read from

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg


def load_from_run(run_dir: Path, step: int | None = None) -> LoadedModel:
    """Consolidated fp32 weights of a checkpoint (any ZeRO stage), loaded strictly."""
    ckpt = runs.open_checkpoint(run_dir, step)
    weights = merge_state_dict(checkpoint_weights(ckpt.ckpt_dir, ckpt.tag))  # Bone/Bat folded in
    model = build_model(ckpt.model_config())
    model.load_state_dict(weights, strict=True)
    return LoadedModel(model.eval(), ckpt.run_dir, ckpt.run_cfg, ckpt.step, ckpt.tag_dir)


def load_from_export(model_dir: Path) -> LoadedModel:
    """An exported dir; when it is a run's own `export/`, the run's config comes along."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model dir {model_dir} does not exist")
    model = load_exported(model_dir)
    parent = model_dir.resolve().parent
    run_dir = parent if (parent / runs.RUN_CONFIG).is_file() else None
    run_cfg = runs.read_run_config(parent) if run_dir else None
    return LoadedModel(model.eval(), run_dir, run_cfg, None, model_dir)


@contextlib.contextmanager
def stdout_to_stderr():
    """DeepSpeed reports checkpoint loading on stdout (partly through logging handlers bound to
    the stream at import time); the CLIs keep stdout for their result, so while loading both the
    Python stream and file descriptor 1 point at stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def load(run: Path | None = None, model_dir: Path | None = None, step: int | None = None) -> LoadedModel:
    """A run's checkpoint (--run, --step) or an export (--model); loading chatter goes to stderr."""
    if (run is None) == (model_dir is None):
        raise UserError("give exactly one of --run and --model")
    with stdout_to_stderr():
        if model_dir is not None:
            if step is not None:
                raise UserError("--step picks a checkpoint of a run; it does not apply to --model")
            return load_from_export(model_dir)
        return load_from_run(run, step)


def run_data_path(loaded: LoadedModel) -> str | None:
    """The data dir the run trained on, if there is a run config."""
    return None if loaded.run_cfg is None else runs.data_dir_of(loaded.run_cfg)


def load_tokenizer(loaded: LoadedModel, override: str | None = None):
    """The tokenizer the model's ids mean (a `data_prep.text_codec.Codec`): --tokenizer if given
    (a tokenizer.json, a data or export dir, or rwkv-world), else the export's own tokenizer file,
    else the run's data dir's. Its vocabulary must fit the model's."""
    from data_prep.errors import UserError
    from data_prep.text_codec import FILES, load_codec, resolve

    try:
        if override is not None:
            where = str(override)
            codec = load_codec(where) if Path(where).is_dir() else resolve(where, "--tokenizer")
        elif any((loaded.source / name).is_file() for name in FILES.values()):
            where, codec = str(loaded.source), load_codec(loaded.source)
        else:
            where = run_data_path(loaded)
            if where is None:
                raise FileNotFoundError(f"{loaded.source} has no tokenizer file and no run config.yaml "
                                        f"next to it, so its tokenizer is unknown: pass --tokenizer (a "
                                        f"tokenizer.json, a data dir, or rwkv-world)")
            codec = load_codec(where)
    except UserError as err:
        raise FileNotFoundError(str(err)) from None
    check_vocab(loaded.cfg.vocab_size, codec.vocab_size, Path(where))
    return codec


def check_vocab(model_vocab: int, data_vocab: int, where: Path) -> None:
    if data_vocab > model_vocab:
        raise UserError(f"the tokenizer of {where} has {data_vocab} tokens, more than the model's "
                        f"vocabulary ({model_vocab}): it is not the data this model was trained on")


@torch.no_grad()
def prefill_cache_bytes(model: LanguageModel, tokens: torch.Tensor) -> dict:
    """Per-token cache bytes (bf16 cache, int32 ids) and fixed state bytes, measured by pre-filling
    `tokens` [1, T] with the linear path and asking the state."""
    _, state = model(tokens, last_only=True)
    n = tokens.shape[1]
    return {"tokens": n, "cache_bytes": state.cache_bytes(),
            "cache_bytes_per_token": state.cache_bytes() / n,
            "fixed_state_bytes": state.recurrent_bytes()}


def add_source_args(parser, step_help: str = "checkpoint step (default: the latest complete one)",
                    hf: bool = False) -> None:
    """--run or --model (one of them), and --step: how evaluate and generate name their model;
    with `hf`, --hf (a Hugging Face model dir, such as a distillation teacher) is a third choice."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run directory (runs/<name>)")
    source.add_argument("--model", type=Path, help="exported model dir (model.safetensors + config.json)")
    if hf:
        source.add_argument("--hf", type=Path, help="a local Hugging Face causal-LM dir (e.g. a "
                            "distillation teacher), run through lm-eval's own HF model, offline")
    parser.add_argument("--step", type=int, help=step_help)
