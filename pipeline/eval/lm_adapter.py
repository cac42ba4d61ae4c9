"""Our models as an lm-evaluation-harness `LM`, scored through the inference state.

- loglikelihood: requests are grouped by their context tokens; each distinct context is pre-filled
  once (the linear `last_only` path) and its state is reused for every continuation of it, which
  are scored together as one right-padded batch. Multiple-choice tasks ask for the same context
  with every choice, so most of the work is done once instead of once per choice.
- loglikelihood_rolling: the document is fed in windows of ctx_len with the state carried from one
  window to the next, so every token is scored with all of the document before it (lm-eval's
  overlapping windows exist for models that cannot carry anything across windows).
- generate_until: linear pre-fill of the context, then one token at a time from the carried state
  until a stop sequence, <|endoftext|> or max_gen_toks.

Contexts are not truncated: the recurrent state (and GoldFinch's compressed cache) takes any length.

`prefix` (ids) goes first in every sequence a request feeds the model: the paper's table was made
with the tokens of "\n" before every context (the reference's run_lm_eval.py pads with them).
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM

from common.errors import UserError

from data_prep.text_codec import Codec
from model import LanguageModel

from ..inference.sampling import next_token
from .state_rows import select_rows

DEFAULT_MAX_GEN_TOKS = 256


class GoldFinchLM(TemplateLM):
    """`GoldFinchLM(model, tokenizer, batch_size=8, share_context=True, prefix=())`; `stats`
    counts the tokens each request type fed through the model."""

    def __init__(self, model: LanguageModel, tokenizer: Codec, batch_size: int = 8,
                 device: str | torch.device = "cpu", share_context: bool = True,
                 prefix: tuple[int, ...] | list[int] = ()):
        super().__init__()
        if batch_size <= 0:
            raise UserError(f"--batch-size={batch_size}: must be a positive integer")
        self.model = model.eval().to(device)
        # Scores must be what the model computes: the state reused across a context's
        # continuations and rolling windows keeps keys in the model's own dtype, as the reference's
        # cache does, not in the compact format generation uses.
        self.model.cache_dtype = next(self.model.parameters()).dtype
        self.tok = tokenizer
        self.batch_size = batch_size
        self.share_context = share_context
        self.prefix = list(prefix)
        self._device = torch.device(device)
        self.stats = defaultdict(int)

    @property
    def eot_token_id(self) -> int:
        return self.tok.eot_id

    @property
    def max_length(self) -> int:
        return self.model.cfg.ctx_len

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """As lm-eval's causal models do: trailing whitespace of the context moves to the
        continuation, the whole text is encoded and split after the context's own tokens. That
        split is only right when the whole encoding starts with exactly those tokens; a tokenizer
        without a pre-tokenizer (RWKV World's greedy longest match over bytes) can merge across
        the boundary, and then the continuation is encoded apart, so its tokens always decode to
        exactly the continuation's text and the context's to exactly the context's."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        context_enc = self.tok_encode(context)
        whole = self.tok_encode(context + continuation)
        if whole[:len(context_enc)] == context_enc:
            return context_enc, whole[len(context_enc):]
        self.stats["boundary_splits_encoded_apart"] += 1
        return context_enc, self.tok_encode(continuation)

    def _forward(self, idx: list[list[int]], state=None, last_only: bool = False):
        return self.model(torch.tensor(idx, device=self._device), state, last_only=last_only)

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (_, context_enc, continuation_enc) in enumerate(requests):
            if not continuation_enc:
                results[i] = (0.0, True)
                continue
            context = (*self.prefix, *context_enc)
            groups[context if self.share_context else (i, *context)].append(i)
        keys = sorted(groups, key=lambda k: (len(k), k))
        while keys:  # contexts of one length are pre-filled together
            n = len(keys[0])
            chunk = [k for k in keys[:self.batch_size] if len(k) == n]
            keys = keys[len(chunk):]
            contexts = [[*self.prefix, *requests[groups[k][0]][1]] for k in chunk]
            self.stats["context_tokens"] += sum(map(len, contexts))
            logits, state = self._forward(contexts, last_only=True)
            first = F.log_softmax(logits[:, -1].float(), dim=-1)
            pairs = [(c, i) for c, k in enumerate(chunk) for i in groups[k]]
            for b in range(0, len(pairs), self.batch_size):
                batch = pairs[b:b + self.batch_size]
                rows = torch.tensor([c for c, _ in batch], device=self._device)
                conts = [requests[i][2] for _, i in batch]
                for (_, i), score in zip(batch, self._score(first[rows], state, rows, conts)):
                    results[i] = score
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], score)
        return results

    def _score(self, first: torch.Tensor, state, rows: torch.Tensor, conts: list[list[int]]):
        """(sum of log-probabilities, all greedy) per continuation: its first token from the
        context's last logits, the rest from one right-padded pass from the context's state."""
        longest = max(map(len, conts))
        logp = first.unsqueeze(1)
        if longest > 1:
            feed = [c[:-1] + [0] * (longest - len(c)) for c in conts]
            self.stats["continuation_tokens"] += sum(len(c) - 1 for c in conts)
            logits, _ = self._forward(feed, select_rows(state, rows))
            logp = torch.cat([logp, F.log_softmax(logits.float(), dim=-1)], dim=1)
        out = []
        for j, c in enumerate(conts):
            target = torch.tensor(c, device=logp.device)
            lp = logp[j, :len(c)]
            picked = lp.gather(1, target[:, None]).squeeze(1)
            out.append((float(picked.sum()), bool((lp.argmax(-1) == target).all())))
        return out

    @torch.no_grad()
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Sum of log p(token | start + all tokens before it) over each document, where the start is
        `prefix` if set, else <|endoftext|>; documents of similar length share a batch, shorter
        ones right-padded and masked."""
        start = self.prefix or [self.prefix_token_id]
        docs = [[*start, *self.tok_encode(req.args[0])] for req in requests]
        order = sorted(range(len(docs)), key=lambda i: -len(docs[i]))
        results: list[float] = [0.0] * len(docs)
        window = self.model.cfg.ctx_len
        for b in range(0, len(order), self.batch_size):
            batch = order[b:b + self.batch_size]
            longest = max(len(docs[i]) for i in batch)
            inputs = torch.tensor([docs[i][:-1] + [0] * (longest - len(docs[i])) for i in batch])
            targets = torch.tensor([docs[i][1:] + [-1] * (longest - len(docs[i])) for i in batch])
            total, state = torch.zeros(len(batch), dtype=torch.float64), None
            for start in range(0, longest - 1, window):
                piece = inputs[:, start:start + window].to(self._device)
                logits, state = self.model(piece, state)
                self.stats["rolling_tokens"] += piece.numel()
                tgt = targets[:, start:start + window].to(self._device)
                lp = F.log_softmax(logits.float(), dim=-1).gather(2, tgt.clamp(min=0)[..., None])
                total += (lp.squeeze(2) * (tgt >= 0)).sum(1).double().cpu()
            for j, i in enumerate(batch):
                results[i] = float(total[j])
                self.cache_hook.add_partial("loglikelihood_rolling", requests[i].args, results[i])
        return results

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs = req.args
            text = self._generate(context, dict(gen_kwargs or {}))
            self.cache_hook.add_partial("generate_until", req.args, text)
            out.append(text)
        return out

    def _generate(self, context: str, kwargs: dict) -> str:
        """Greedy unless do_sample with a temperature; the text is cut before the first stop
        sequence, as lm-eval's own models cut it."""
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
        top_p = float(kwargs.pop("top_p", 1.0) or 1.0)
        generator = torch.Generator().manual_seed(int(kwargs.pop("seed", 0)))
        ids = [*self.prefix, *self.tok_encode(context)] or [self.eot_token_id]
        self.stats["context_tokens"] += len(ids)
        logits, state = self._forward([ids], last_only=True)
        new: list[int] = []
        text = ""
        while len(new) < max_new:
            token = next_token(logits[0, -1].cpu(), temperature, top_p, generator)
            if token == self.eot_token_id:
                break
            new.append(token)
            text = self.tok_decode(new)
            if any(stop in text for stop in until):
                break
            logits, state = self._forward([[token]], state, last_only=True)
        self.stats["generated_tokens"] += len(new)
        for stop in until:
            text = text.split(stop)[0]
        return text
