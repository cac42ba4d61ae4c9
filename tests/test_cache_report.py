import json
import subprocess
import sys

import pytest

from model.cache_report import main, report
from model import load_model_config


@pytest.mark.parametrize("preset, ratio, gold, llama", [
    ("L24-D2048", 756.0, 260, 196_608),
    ("L80-D8192", 2550.0, 1028, 2_621_440),
])
def test_paper_ratios_are_measured(preset, ratio, gold, llama):
    out = report(load_model_config(preset), tokens=8)
    assert out["device"] == "meta"
    assert out["goldfinch_bytes_per_token"] == gold and out["llama_bytes_per_token"] == llama
    assert abs(out["ratio"] - ratio) <= 0.5


def test_small_size_runs_on_cpu_and_matches_formula(capsys):
    assert main(["--tokens", "16", "model.n_layer=3", "model.n_embd=64", "model.head_size=16",
                 "model.vocab_size=50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "cpu"
    assert out["goldfinch_bytes_per_token"] == out["formula_goldfinch"] == 12
    assert out["llama_bytes_per_token"] == out["formula_llama"] == 768


def test_cli_rejects_bad_config():
    proc = subprocess.run([sys.executable, "-m", "model.cache_report", "model.n_embd=100"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "model.n_embd=100" in proc.stderr
