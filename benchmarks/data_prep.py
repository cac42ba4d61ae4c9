"""Whole `python -m data_prep` path vs tokenizing the same corpus in one process, in one run.

Both sides use the same tokenizer (trained once here on the corpus, or --tokenizer: a
tokenizer.json, or rwkv-world for the RWKV World vocabulary through pyrwkv-tokenizer) and the same
documents (the default input, this Python's standard library, unless --input). The data_prep time
is the wall time of the command in a fresh output dir: interpreter start, scan, Ray start-up,
tokenizing, writing shards and manifest, Ray shutdown. It runs once per executor, side by side:
`data.executor=local` (every task in the driver process) and `data.executor=ray`; the line for
`auto` says which of the two the default picks for this input. The baseline is `encode_batch` over
the already-loaded texts in one process (the package's own batch encode), timed alone, with one
tokenizer thread and with all of them.
Goal on a 2-core box: data_prep <= 0.8x the one-process baseline.

    python benchmarks/data_prep.py [--input PATH] [--tokenizer tokenizer.json|rwkv-world] [--repeats 1]
                                   [--executors local,ray]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _repo_path import ROOT  # first: the `data_prep` package, not this file

BASELINE = r"""
import sys, time
sys.path.append("benchmarks")
from benchmarks.data_prep import load_texts
from data_prep.text_codec import resolve, token_dtype
texts = load_texts(sys.argv[1] or None)
codec = resolve(sys.argv[2])
t0 = time.perf_counter()
ids = codec.encode_documents(texts, token_dtype(codec))
print(time.perf_counter() - t0, sum(len(i) for i in ids))
"""


def load_texts(input_spec: str | None) -> list[str]:
    """The usable documents data_prep would tokenize, in its order."""
    from data_prep.config import DataConfig
    from data_prep.readers import ReadOptions, read_piece
    from data_prep.sources import find_corpus
    from data_prep.units import make_units

    cfg = DataConfig(input=input_spec)
    opts = ReadOptions(cfg.text_field, cfg.on_invalid_utf8)
    units = make_units(find_corpus(input_spec), cfg.unit_bytes)
    return [rec.text for u in units for p in u.pieces for rec in read_piece(p, opts) if rec.skip is None]


def train_once(input_spec: str | None, path: Path) -> None:
    from data_prep.config import DataConfig
    from data_prep.tokenizer import train_tokenizer

    path.write_text(train_tokenizer(load_texts(input_spec), DataConfig().vocab_size))


def baseline(input_spec: str | None, tokenizer: str, threads: int | None) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    else:
        env.pop("RAYON_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", BASELINE, input_spec or "", str(tokenizer)], cwd=ROOT,
                         env=env, check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def pipeline(input_spec: str | None, tokenizer: str, out: Path, executor: str) -> tuple[float, str]:
    args = [sys.executable, "-m", "data_prep", f"data.output={out}", f"data.tokenizer={tokenizer}",
            f"data.executor={executor}"]
    if input_spec:
        args.append(f"data.input={input_spec}")
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, done.stdout.strip().splitlines()[-1]


EXECUTORS = ("local", "ray")  # the default columns; `auto` (what `make data` uses) may be asked for too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="data.input (default: the standard library)")
    parser.add_argument("--tokenizer", help="tokenizer.json or rwkv-world (default: train a BPE first)")
    parser.add_argument("--repeats", type=int, default=1, help="best of N for each side")
    parser.add_argument("--executors", default=",".join(EXECUTORS),
                        help="data.executor values to time, comma-separated (default: local,ray)")
    args = parser.parse_args()
    kinds = args.executors.split(",")
    if not kinds or any(kind not in (*EXECUTORS, "auto") for kind in kinds):
        parser.error(f"--executors {args.executors}: expected some of local, ray, auto")
    with tempfile.TemporaryDirectory(prefix="bench_data_prep_") as tmp:
        tokenizer = args.tokenizer or str(Path(tmp) / "tokenizer.json")
        if not args.tokenizer:
            t0 = time.perf_counter()
            train_once(args.input, Path(tokenizer))
            print(f"tokenizer trained once for both sides in {time.perf_counter() - t0:.1f} s")
        load_before = os.getloadavg()[0]
        ones, everys, runs = [], [], {kind: [] for kind in kinds}
        for i in range(args.repeats):  # interleaved, so a busy spell on the box hits every side
            ones.append(baseline(args.input, tokenizer, 1))
            everys.append(baseline(args.input, tokenizer, None))
            for kind in kinds:
                runs[kind].append(pipeline(args.input, tokenizer, Path(tmp) / f"{kind}{i}", kind))
            print(f"repeat {i + 1}: encode_batch 1 thread {ones[-1][0]:.2f} s, " + ", ".join(
                f"{kind} {runs[kind][-1][0]:.2f} s ({runs[kind][-1][0] / ones[-1][0]:.2f}x)" for kind in kinds)
                + f"; load average {os.getloadavg()[0]:.2f}", flush=True)
        one, every = min(ones), min(everys)
        walls = {kind: min(runs[kind])[0] for kind in kinds}
    report(args, one, every, walls, runs[kinds[0]][0][1], load_before)


def report(args, one, every, walls: dict[str, float], line: str, load_before: float) -> None:
    from data_prep.config import DataConfig
    from data_prep.executor import choose
    from data_prep.sources import find_corpus

    nbytes = find_corpus(args.input).nbytes
    cpus = os.cpu_count()
    print(line)
    print(f"tokenizer: {args.tokenizer or 'a BPE trained here'}; cpus: {cpus}, input: {nbytes / 1e6:.1f} MB, "
          f"tokens: {one[1]:,}, best of {args.repeats}, "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"one process, encode_batch, 1 thread:   {one[0]:7.2f} s")
    print(f"one process, encode_batch, {cpus} threads:  {every[0]:7.2f} s")
    print(f"{'':38}" + "".join(f" {kind:>8}" for kind in walls))
    print("python -m data_prep (whole path), s:   " + "".join(f" {w:8.2f}" for w in walls.values()))
    print("ratio to 1 thread (goal <= 0.8x):      " + "".join(f" {w / one[0]:7.2f}x" for w in walls.values()))
    print(f"ratio to {cpus} threads:                   " + "".join(f" {w / every[0]:7.2f}x" for w in walls.values()))
    picked = choose("auto", nbytes, DataConfig().auto_local_bytes, os.environ)
    print(f"data.executor=auto picks {picked} for this input (local below "
          f"{DataConfig().auto_local_bytes / 1e6:.0f} MB of input unless RAY_ADDRESS is set)")


if __name__ == "__main__":
    main()
