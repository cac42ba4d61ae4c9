"""The paper user's path end to end: a tiny run on RWKV World data, exported to the reference's
`.pth` layout; a binidx corpus (written here, as RWKV-LM's make_data.py writes one: every document
ends with the separator 0) turned into shards; training continued from the `.pth` on those shards;
loss falls and generate prints text."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep_helpers import read_samples
from pipeline_helpers import ENV, ROOT, metrics, run_train

pytestmark = pytest.mark.slow

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "GoldFinch keeps one compressed key cache.",
             "Finch-C2 blocks sit below the GOLD blocks.", "日本語の文もあります。", "emoji 🎉 too\n"]


def python(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def write_make_data_style(prefix: Path, documents: list[list[int]]) -> None:
    """uint16 binidx, one sequence per document, each ending with 0 (as make_data.py appends it)."""
    sizes, pointers, offset, blob = [], [], 0, b""
    for doc in documents:
        arr = np.asarray(doc + [0], "<u2")
        sizes.append(arr.size)
        pointers.append(offset)
        offset += arr.nbytes
        blob += arr.tobytes()
    Path(f"{prefix}.bin").write_bytes(blob)
    head = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, len(sizes), len(sizes) + 1)
    Path(f"{prefix}.idx").write_bytes(head + np.asarray(sizes, "<i4").tobytes()
                                      + np.asarray(pointers, "<i8").tobytes()
                                      + np.arange(len(sizes) + 1, dtype="<i8").tobytes())


def test_binidx_and_rwkv_world_continue_a_reference_checkpoint(tmp_path):
    from data_prep.rwkv_world import RwkvWorldCodec

    codec = RwkvWorldCodec()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(SENTENCES, 6)) for _ in range(60)]

    # 1. a tiny run of ours on RWKV World data, exported and written in the reference's layout
    corpus = tmp_path / "text"
    corpus.mkdir()
    for i, text in enumerate(texts):
        (corpus / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    first = tmp_path / "first"
    python("-m", "data_prep", f"data.input={corpus}", f"data.output={first / 'data'}", "data.tokenizer=rwkv-world",
           "data.executor=local", "data.val_fraction=0.1")
    run_train(first, "train.run_name=tiny", "train.max_steps=2", "train.export=false")
    python("-m", "pipeline.export", "--run", str(first / "runs" / "tiny"), "--out", str(tmp_path / "export"))
    assert (tmp_path / "export" / "rwkv_vocab_v20230424.txt").is_file()
    pth = tmp_path / "tiny.pth"
    python("-m", "model.convert", "export", str(tmp_path / "export"), "--out", str(pth))

    # 2. a binidx corpus written the way make_data.py writes one -> shards, ids unchanged
    docs = [codec.encode(t) for t in texts[::-1]]
    write_make_data_style(tmp_path / "corpus", docs)
    second = tmp_path / "second"
    python("-m", "data_prep", f"data.input={tmp_path / 'corpus.bin'}", f"data.output={second / 'data'}",
           "data.tokenizer=rwkv-world", "data.executor=local", "data.val_fraction=0.1")
    manifest = json.loads((second / "data" / "manifest.json").read_text())
    assert manifest["tokenizer"]["kind"] == "rwkv-world"
    samples = read_samples(second / "data")
    assert len(samples) == len(docs)
    got = sorted(s["tokens"].tolist() for s in samples)
    assert got == sorted(docs)  # the trailing separator is the trainer's to add, as for text input

    # 3. continue from the reference checkpoint: loss falls; generate prints text
    run_train(second, "train.run_name=cont", f"train.init_from={pth}", "train.max_steps=12",
              "train.lr=1e-3", "train.warmup_steps=0", "train.export=false")
    losses = [r["loss"] for r in metrics(second, "cont")]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3, losses
    out = python("-m", "pipeline.generate", "--run", str(second / "runs" / "cont"), "--prompt", "The quick",
                 "--max-new-tokens", "8", "--json")
    result = json.loads(out.stdout)
    assert result["text"].startswith("The quick") and len(result["new_ids"]) > 0
