"""`--prefix-newline`: the tokens of "\\n" go first in every sequence a request feeds the model, as
the reference's run_lm_eval.py pads every context."""
import argparse

import pytest
import torch
from lm_eval.api.instance import Instance

from pipeline import lm_eval as cli
from pipeline.eval.lm_adapter import GoldFinchLM

from test_pipeline_generate import small_model

NL = 11  # the RWKV World id of "\n"; any id works here


class Spy(torch.nn.Module):
    """Records the first token of every sequence fed without a state (a fresh request)."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.cfg, self.firsts = model, model.cfg, []

    def forward(self, idx, state=None, last_only=False):
        if state is None:
            self.firsts += idx[:, 0].tolist()
        return self.inner(idx, state, last_only=last_only)


class Codec:
    eot_id = 0

    def encode(self, text):
        return [NL if ch == "\n" else 20 + ord(ch) % 40 for ch in text]

    def decode(self, ids):
        return "".join("\n" if i == NL else "x" for i in ids)


def logprob_sum(model, ids, n_context):
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    lp = torch.log_softmax(logits[0].float(), dim=-1)[n_context - 1:]
    return float(lp.gather(1, torch.tensor(ids[n_context:])[:, None]).sum())


def test_every_request_starts_with_the_newline_id():
    spy = Spy(small_model("goldfinch"))
    lm = GoldFinchLM(spy, Codec(), batch_size=2, prefix=[NL])
    contexts, conts = [[5, 9, 13], [7], [5, 9, 13]], [[17, 4], [3, 3, 9], [8]]
    got = lm._loglikelihood_tokens([((None, None), c, t) for c, t in zip(contexts, conts)])
    for ctx, cont, (ll, _) in zip(contexts, conts, got):
        assert ll == pytest.approx(logprob_sum(spy.inner, [NL, *ctx, *cont], len(ctx) + 1), abs=1e-4)
    lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("ab cd",), 0)])
    lm.generate_until([Instance("generate_until", {}, ("ab", {"until": ["\n"], "max_gen_toks": 2}), 0)])
    assert spy.firsts and set(spy.firsts) == {NL}
    plain = Spy(spy.inner)
    GoldFinchLM(plain, Codec()).loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("ab",), 0)])
    assert plain.firsts == [0]  # without the option documents start at <|endoftext|> as before


def test_cli_option_feeds_the_tokenizers_newline(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "run_tasks", lambda lm, *a: seen.setdefault("prefix", lm.prefix))
    args = cli.parse(["--model", "m", "--tasks", "lambada_openai", "--prefix-newline",
                      "--device", "cpu"])
    loaded = argparse.Namespace(model=small_model("finch"))
    cli.evaluate(loaded, Codec(), args)
    assert seen["prefix"] == [NL]
    seen.clear()
    cli.evaluate(loaded, Codec(), cli.parse(["--model", "m", "--tasks", "x", "--device", "cpu"]))
    assert seen["prefix"] == []
