"""`python -m pipeline.export` is byte-reproducible: the same checkpoint exported by two separate
processes gives the same bytes in every file (safetensors alone orders its metadata differently
from one process to the next)."""
import hashlib
import json
import subprocess
import sys

import pytest

from pipeline_helpers import ENV, ROOT, make_data_dir, run_train


def digests(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


@pytest.mark.slow
def test_two_processes_export_the_same_bytes(tmp_path):
    make_data_dir(tmp_path / "data")
    run_train(tmp_path, "train.run_name=rep", "train.max_steps=2", "train.zero_stage=2", "train.export=false")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        subprocess.run([sys.executable, "-m", "pipeline.export", "--run", str(tmp_path / "runs" / "rep"),
                        "--out", str(out)], cwd=ROOT, env=ENV, check=True, capture_output=True)
    first = digests(outs[0])
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(first)
    assert digests(outs[1]) == first
    raw = (outs[0] / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    keys = list(header)
    assert keys[0] == "__metadata__" and keys[1:] == sorted(keys[1:])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    config = json.loads((outs[0] / "config.json").read_text())
    assert list(config) == sorted(config)
