"""Synthetic data dirs in the data_prep format, for testing the trainer without running data_prep."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import in_process
import rank_processes
from data_prep import shard_format

EOT_NAME = "<|endoftext|>"


def write_tokenizer(path: Path, vocab: int = 300) -> int:
    """A byte-level BPE tokenizer.json with an end-of-text token; returns the EOT id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOT_NAME],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    words = [f"name{i} = value{i * 7} + {i}\n" for i in range(400)]
    tok.train_from_iterator(words, trainer)
    tok.save(str(path))
    assert tok.get_vocab_size() == vocab
    return tok.token_to_id(EOT_NAME)


def make_data_dir(root: Path, docs_per_shard=(5, 7, 4, 6), val_docs=(6,), seed=0, max_len=90):
    """Write shards of learnable documents; doc i starts with token 1 + i % 250 (never EOT), so
    with fewer than 250 documents the first token identifies the document. Shards and manifest
    are written with data_prep's format module, the one the trainer reads with."""
    root.mkdir(parents=True, exist_ok=True)
    eot = write_tokenizer(root / "tokenizer.json")
    rng = np.random.default_rng(seed)
    shards, doc_id, docs = [], 0, {}
    for split, counts in (("train", docs_per_shard), ("val", val_docs)):
        for s, count in enumerate(counts):
            name = shard_format.shard_name(split, s)
            total = 0
            with open(root / name, "wb") as f:
                writer = shard_format.ShardWriter(f)
                for _ in range(count):
                    # learnable: an arithmetic progression over the non-special ids
                    start, stride = rng.integers(0, 250), rng.integers(1, 4)
                    body = eot + 1 + (start + stride * np.arange(rng.integers(3, max_len))) % 250
                    tokens = np.concatenate([[1 + doc_id % 250], body]).astype(np.uint16)
                    writer.add(f"d{doc_id:06d}", {"source": f"doc{doc_id}"}, tokens)
                    docs[doc_id] = (split, tokens.astype(np.int64))
                    total += len(tokens)
                    doc_id += 1
                writer.close()
            raw = (root / name).read_bytes()
            shards.append({"name": name, "sha256": hashlib.sha256(raw).hexdigest(), "samples": count,
                           "tokens": total, "file_bytes": len(raw)})
    (root / shard_format.MANIFEST).write_bytes(shard_format.manifest_bytes({"shards": shards}))
    return docs, eot


TINY = ["model.n_layer=3", "model.n_embd=64", "model.head_size=16", "model.ctx_len=32",
        "model.mix_lora_rank=8", "model.decay_lora_rank=8", "train.micro_batch=4",
        "train.warmup_steps=2", "train.lr=3e-3", "train.lr_final=1e-3", "train.val_every=0",
        "train.log_every=0", "tracking.enabled=false"]  # the MLflow tests turn tracking on
# validation in the shared reference runs: at steps 2 and 4, over one global batch of val windows
REF_VAL = ["train.val_every=2", "train.val_batches=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ROOT = Path(__file__).resolve().parents[1]


def run_train(tmp_path: Path, *overrides, nproc: int = 1, check: bool = True, env: dict | None = None,
              command: bool = False):
    """The trainer on tmp_path/data, all outputs under tmp_path, with `nproc` ranks; returns a
    CompletedProcess. One rank that no fault kills runs inside this process (tests/in_process.py);
    killed or several ranks run as processes forked from one that has imported the trainer
    (tests/rank_processes.py); `command=True` runs the command itself, `python -m pipeline.train`
    or torchrun, for what only it can show."""
    args = [*TINY, f"data.path={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'runs'}",
            f"tracking.dir={tmp_path / 'mlruns'}", *overrides]
    if command:
        proc = run_command(args, nproc, env)
    elif nproc == 1 and not in_process.kills(env):
        proc = in_process.train(args, env)
    else:
        proc = rank_processes.launch(args, nproc, {**ENV, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_command(args: list[str], nproc: int, env: dict | None) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "pipeline.train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "pipeline.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=600)


def metrics(tmp_path: Path, run: str):
    lines = (tmp_path / "runs" / run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]
