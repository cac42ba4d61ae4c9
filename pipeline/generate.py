"""Generate text from a trained model with its inference cache.

    python -m pipeline.generate --run runs/<name> --prompt "def main(" --max-new-tokens 64
    python -m pipeline.generate --model DIR --tokenizer data/default/tokenizer.json --prompt "..."
        [--step N] [--temperature 0.8 --top-p 0.95 --seed 0] [--json]

The prompt is pre-filled in one linear-time pass (`last_only=True`), then tokens come one at a
time from the carried state; generation stops at <|endoftext|> or after --max-new-tokens.
Temperature 0 (the default) is greedy. Prints the text, then pre-fill and decode speed, the cache
the state holds and how much smaller it is than a Llama-style K/V cache of the same depth and
width (2 bytes x 2 (K and V) x n_layer x n_embd per token, bf16, no GQA).

There is no hard context limit: GoldFinch and Finch carry a recurrent state and GoldFinch's cache
and Llama's RoPE accept any position. Beyond the trained model.ctx_len quality is untested, so a
note says so on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.cli import command
from common.errors import UserError

from model import LanguageModel, ModelConfig, ModelState
from model.cache_report import llama_style_bytes_per_token

from .inference.run_loading import add_source_args, load, load_tokenizer
from .inference.sampling import check_params, next_token


@dataclass
class Generation:
    prompt_ids: list[int]
    new_ids: list[int]
    stopped: bool  # hit the end-of-text token
    prefill_s: float
    decode_s: float
    state: ModelState  # covers the prompt and every generated token but the last

    def stats(self, cfg: ModelConfig) -> dict:
        cached = self.state.seen
        per_token = self.state.cache_bytes() / cached
        llama = llama_style_bytes_per_token(cfg)
        return {
            "arch": cfg.arch, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
            "prompt_tokens": len(self.prompt_ids), "new_tokens": len(self.new_ids),
            "stopped_at_eot": self.stopped,
            "prefill_s": self.prefill_s, "prefill_tokens_per_s": len(self.prompt_ids) / self.prefill_s,
            "decode_s": self.decode_s,
            "decode_tokens_per_s": len(self.new_ids) / self.decode_s if self.decode_s else None,
            "cached_tokens": cached, "cache_bytes": self.state.cache_bytes(),
            "cache_bytes_per_token": per_token, "fixed_state_bytes": self.state.recurrent_bytes(),
            "llama_style_bytes_per_token": llama,
            "ratio_vs_llama": llama / per_token if per_token else None,
        }


@torch.no_grad()
def generate(model: LanguageModel, prompt_ids: list[int], max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             stop_id: int | None = None) -> Generation:
    """Linear pre-fill of the prompt, then one token per step through the state."""
    if not prompt_ids:
        raise UserError("the prompt holds no tokens")
    check_params(temperature, top_p)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    model(torch.tensor([prompt_ids[:1]]), last_only=True)  # warm-up, so the timings are steady
    t0 = time.perf_counter()
    logits, state = model(torch.tensor([prompt_ids]), last_only=True)
    t1 = time.perf_counter()
    new_ids, stopped = [], False
    for i in range(max_new_tokens):
        token = next_token(logits[0, -1], temperature, top_p, generator)
        if token == stop_id:
            stopped = True
            break
        new_ids.append(token)
        if i + 1 < max_new_tokens:
            logits, state = model(torch.tensor([[token]]), state, last_only=True)
    return Generation(prompt_ids, new_ids, stopped, t1 - t0, time.perf_counter() - t1, state)


def report(stats: dict) -> str:
    lines = [
        f"prompt {stats['prompt_tokens']} tokens, generated {stats['new_tokens']}"
        + (" (stopped at <|endoftext|>)" if stats["stopped_at_eot"] else ""),
        f"pre-fill {stats['prefill_tokens_per_s']:,.1f} tokens/s ({stats['prefill_s']:.3f} s); "
        + (f"decode {stats['decode_tokens_per_s']:,.1f} tokens/s ({stats['decode_s']:.3f} s)"
           if stats["decode_tokens_per_s"] else "decode: nothing generated"),
    ]
    shape = f"{stats['n_layer']} layers x {stats['n_embd']}"
    if stats["cache_bytes"]:
        lines.append(f"{stats['arch']} cache: {stats['cache_bytes']:,} bytes for "
                     f"{stats['cached_tokens']} tokens = {stats['cache_bytes_per_token']:,.1f} "
                     f"bytes/token; fixed state {stats['fixed_state_bytes']:,} bytes")
        lines.append(f"Llama-style cache of the same depth and width ({shape}): "
                     f"{stats['llama_style_bytes_per_token']:,} bytes/token, "
                     f"{stats['ratio_vs_llama']:,.1f}x the {stats['arch']} cache")
    else:
        lines.append(f"{stats['arch']} keeps no per-token cache: fixed state "
                     f"{stats['fixed_state_bytes']:,} bytes; a Llama-style cache ({shape}) would "
                     f"grow by {stats['llama_style_bytes_per_token']:,} bytes/token")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.generate",
                                     description=__doc__.splitlines()[0])
    add_source_args(parser, "checkpoint step of --run (default: the latest)")
    parser.add_argument("--tokenizer", help="a tokenizer.json, a data dir, or rwkv-world "
                        "(default: the export's own, else the run's data dir's)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser.parse_args(argv)


@command("pipeline.generate")
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.prompt:
        raise UserError("--prompt is empty: give the text to continue")
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens={args.max_new_tokens}: must be >= 0")
    check_params(args.temperature, args.top_p)
    loaded = load(args.run, args.model, args.step)
    tokenizer = load_tokenizer(loaded, args.tokenizer)
    prompt_ids = tokenizer.encode(args.prompt)
    if not prompt_ids:
        raise UserError(f"--prompt {args.prompt!r} encodes to no tokens with the {tokenizer.kind} "
                        "tokenizer")
    total = len(prompt_ids) + args.max_new_tokens
    if total > loaded.cfg.ctx_len:
        print(f"pipeline.generate: note: {total} tokens exceed the trained context "
              f"(model.ctx_len={loaded.cfg.ctx_len}); {loaded.cfg.arch} runs past it, but quality "
              f"there is untested", file=sys.stderr)
    torch.manual_seed(args.seed)
    out = generate(loaded.model, prompt_ids, args.max_new_tokens, args.temperature, args.top_p,
                   args.seed, tokenizer.eot_id)
    text = tokenizer.decode(out.prompt_ids + out.new_ids)
    stats = out.stats(loaded.cfg)
    if args.json:
        print(json.dumps({"text": text, "new_ids": out.new_ids, **stats, "step": loaded.step}))
    else:
        print(text)
        print("---")
        print(report(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
