"""Generation: the cached path gives the full forward's greedy tokens; sampling, stats and errors."""
import json
import subprocess
import sys

import pytest
import torch

from model import build_model, load_model_config, save_exported
from pipeline import generate as gen
from pipeline.inference.sampling import next_token

from pipeline_helpers import ENV, ROOT, write_tokenizer

ARCHS = ("goldfinch", "finch", "llama")
SMALL = ["n_layer=3", "n_embd=64", "head_size=16", "ctx_len=32", "mix_lora_rank=8",
         "decay_lora_rank=8", "vocab_size=300"]


def small_model(arch: str):
    """A tiny model with every weight perturbed: the paper's init zeroes output projections,
    which would make many logits tie and the comparisons below too easy."""
    torch.manual_seed(1)
    model = build_model(load_model_config(None, [f"arch={arch}", *SMALL]))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def greedy_by_full_forward(model, prompt: list[int], n: int) -> list[int]:
    """The reference: re-run the whole sequence without any state for every new token."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([seq]))
            seq.append(int(torch.argmax(logits[0, -1])))
    return seq[len(prompt):]


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_greedy_matches_full_forward(arch):
    model = small_model(arch)
    prompt = torch.randint(1, 300, (9,), generator=torch.Generator().manual_seed(5)).tolist()
    out = gen.generate(model, prompt, 16)
    assert out.new_ids == greedy_by_full_forward(model, prompt, 16)
    assert len(out.new_ids) == 16 and not out.stopped
    assert out.state.seen == len(prompt) + 15  # the last token is never fed back


def test_seeded_sampling_is_reproducible_and_tiny_top_p_is_greedy():
    model = small_model("goldfinch")
    prompt = [5, 17, 42, 99]
    a = gen.generate(model, prompt, 20, temperature=1.0, top_p=0.95, seed=3).new_ids
    b = gen.generate(model, prompt, 20, temperature=1.0, top_p=0.95, seed=3).new_ids
    c = gen.generate(model, prompt, 20, temperature=1.0, top_p=0.95, seed=4).new_ids
    assert a == b
    assert a != c
    greedy = gen.generate(model, prompt, 20).new_ids
    assert gen.generate(model, prompt, 20, temperature=1.3, top_p=1e-9, seed=7).new_ids == greedy


def test_next_token_rules():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    assert next_token(logits, 0.0) == 0
    g = torch.Generator().manual_seed(0)
    draws = {next_token(logits, 1.0, 0.8, g) for _ in range(300)}
    assert draws == {0, 1}  # 0.6 < 0.8, so the nucleus is {0, 1}; index 2 is never drawn
    assert {next_token(logits, 1.0, 1.0, g) for _ in range(300)} == {0, 1, 2}
    with pytest.raises(ValueError, match="top-p"):
        next_token(logits, 1.0, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        gen.generate(build_model(load_model_config(None, ["arch=llama", *SMALL])), [1], 2, -1.0)


def test_stops_at_end_of_text():
    model = small_model("goldfinch")
    first = gen.generate(model, [3, 4, 5], 1).new_ids[0]
    out = gen.generate(model, [3, 4, 5], 10, stop_id=first)
    assert out.new_ids == [] and out.stopped


@pytest.mark.parametrize("arch, per_token, ratio", [
    ("goldfinch", 2 * 64 / 16 + 4, 2 * 2 * 3 * 64 / 12),
    ("llama", 2 * 2 * 3 * 64, 1.0),
    ("finch", 0.0, None),
])
def test_cache_stats_match_the_formulas(arch, per_token, ratio):
    stats = gen.generate(small_model(arch), list(range(1, 21)), 5).stats(small_model(arch).cfg)
    assert stats["cache_bytes_per_token"] == per_token
    assert stats["llama_style_bytes_per_token"] == 2 * 2 * 3 * 64
    assert stats["ratio_vs_llama"] == (pytest.approx(ratio) if ratio else None)
    assert stats["cached_tokens"] == 24
    assert (stats["fixed_state_bytes"] > 0) == (arch != "llama")


@pytest.fixture
def exported(tmp_path):
    """An exported goldfinch (no run around it) and a tokenizer for it."""
    model = small_model("goldfinch")
    save_exported(model.state_dict(), model.cfg, tmp_path / "export")
    write_tokenizer(tmp_path / "tokenizer.json")
    return tmp_path


def test_cli_prints_text_speed_and_cache_ratio(exported, capsys):
    args = ["--model", str(exported / "export"), "--tokenizer", str(exported / "tokenizer.json"),
            "--prompt", "name1 = value", "--max-new-tokens", "6"]
    assert gen.main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # the same greedy continuation as re-running the full forward, decoded with the tokenizer
    from tokenizers import Tokenizer

    from model import load_exported

    tok = Tokenizer.from_file(str(exported / "tokenizer.json"))
    prompt = tok.encode("name1 = value").ids
    expected = greedy_by_full_forward(load_exported(exported / "export").eval(), prompt, 6)
    eot = tok.token_to_id("<|endoftext|>")
    expected = expected[:expected.index(eot)] if eot in expected else expected
    assert out["prompt_tokens"] == len(prompt)
    assert out["new_ids"] == expected and out["new_tokens"] == len(expected)
    assert out["text"] == tok.decode(prompt + expected)
    assert out["prefill_tokens_per_s"] == pytest.approx(len(prompt) / out["prefill_s"])
    assert out["ratio_vs_llama"] == pytest.approx(768 / 12)
    assert gen.main(args) == 0
    text = capsys.readouterr().out
    assert "tokens/s" in text and "64.0x the goldfinch cache" in text


def test_long_prompt_runs_with_a_note(exported, capsys):
    args = ["--model", str(exported / "export"), "--tokenizer", str(exported / "tokenizer.json"),
            "--prompt", "name12 = value84 + 12\n" * 8, "--max-new-tokens", "3", "--json"]
    assert gen.main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["prompt_tokens"] > 32
    assert "exceed the trained context (model.ctx_len=32)" in captured.err


def test_bad_inputs_fail_clearly(exported, tmp_path, capsys):
    model, tok = str(exported / "export"), str(exported / "tokenizer.json")
    cases = [
        (["--run", str(tmp_path / "nope"), "--prompt", "x"], str(tmp_path / "nope")),
        (["--model", str(tmp_path / "nope"), "--tokenizer", tok, "--prompt", "x"],
         str(tmp_path / "nope")),
        (["--model", model, "--prompt", "x"], "--tokenizer"),
        (["--model", model, "--tokenizer", str(tmp_path / "t.json"), "--prompt", "x"],
         str(tmp_path / "t.json")),
        (["--model", model, "--tokenizer", tok, "--prompt", ""], "--prompt is empty"),
        (["--model", model, "--tokenizer", tok, "--prompt", "x", "--top-p", "0"], "--top-p"),
        (["--model", model, "--tokenizer", tok, "--prompt", "x", "--max-new-tokens", "-1"], "--max-new-tokens"),
        (["--model", model, "--tokenizer", tok, "--prompt", "x", "--step", "3"], "--step"),
    ]
    for argv, needle in cases:
        assert gen.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("pipeline.generate: ") and needle in err, (argv, err)
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.yaml").write_text("model: {}\n")
    assert gen.main(["--run", str(tmp_path / "empty_run"), "--prompt", "x"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_module_entry_point_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.generate", "--run", str(tmp_path / "missing"),
                           "--prompt", "hi"], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert proc.returncode == 2
    assert f"pipeline.generate: run dir {tmp_path / 'missing'} does not exist" in proc.stderr
