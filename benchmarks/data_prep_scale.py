"""How data_prep scales with the number of documents: driver memory, time to the first shard and
wall time on synthetic JSONL corpora, against a one-thread `encode_batch` of the same text.

Corpora of short documents (~100 bytes: the count, not the bytes, is what the driver must not
grow with) are generated once and cached under --cache, in files of 100k documents. Every size
uses the same tokenizer (trained once on the smallest corpus), so tokenizer training is not timed.
The driver's peak RSS is its own (getrusage of the `python -m data_prep` process at exit, not
Ray's workers). Goals: peak at the largest size <= 1.3x and <= +64 MB over the smallest.

    python benchmarks/data_prep_scale.py [--sizes 100000,400000,1600000] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _repo_path import ROOT  # first: the `data_prep` package, not this file

PER_FILE = 100_000
WORDS = ["the", "of", "data", "model", "train", "token", "shard", "ray", "value", "gold", "finch", "é",
         "日本", "42", "(x)", "return", "if", "else", "\n", "  "]
DRIVER = r"""
import atexit, resource, runpy, sys
atexit.register(lambda: print(f"driver_peak_rss_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}",
                              file=sys.stderr, flush=True))
sys.argv = ["data_prep", *sys.argv[1:]]
runpy.run_module("data_prep", run_name="__main__")
"""
BASELINE = r"""
import json, sys, time
from pathlib import Path
from tokenizers import Tokenizer
texts = [json.loads(line)["text"] for p in sorted(Path(sys.argv[1]).glob("*.jsonl")) for line in open(p, "rb")]
tok = Tokenizer.from_file(sys.argv[2])
t0 = time.perf_counter()
tok.encode_batch(texts, add_special_tokens=False)
print(time.perf_counter() - t0)
"""


def corpus(cache: Path, docs: int) -> Path:
    """docs JSONL documents in files of PER_FILE, generated once (deterministic)."""
    root = cache / f"jsonl-{docs}"
    if (root / ".done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(docs)
    for start in range(0, docs, PER_FILE):
        n = min(PER_FILE, docs - start)
        lines = (json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(8, 30)))}) for _ in range(n))
        (root / f"part-{start // PER_FILE:05d}.jsonl").write_text("\n".join(lines) + "\n")
    (root / ".done").write_text("")
    return root


def tokenizer_for(cache: Path, root: Path) -> Path:
    path = cache / "tokenizer.json"
    if not path.exists():
        from data_prep.tokenizer import train_tokenizer

        texts = [json.loads(line)["text"] for line in open(sorted(root.glob("*.jsonl"))[0], "rb")]
        path.write_text(train_tokenizer(texts, 4096))
    return path


def first_tar(out: Path, t0: float, found: list, stop: threading.Event) -> None:
    while not stop.is_set() and not found:
        if any(out.rglob("*.tar")):
            found.append(time.perf_counter() - t0)
        time.sleep(0.05)


def data_prep(root: Path, tokenizer: Path, out: Path) -> dict:
    args = [sys.executable, "-c", DRIVER, f"data.input={root}", f"data.output={out}",
            f"data.tokenizer={tokenizer}"]
    found, stop = [], threading.Event()
    t0 = time.perf_counter()
    watcher = threading.Thread(target=first_tar, args=(out, t0, found, stop), daemon=True)
    watcher.start()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    stop.set()
    if done.returncode != 0:
        sys.exit(f"data_prep failed: {done.stderr[-2000:]}")
    rss = int(done.stderr.rsplit("driver_peak_rss_kb=", 1)[1].split()[0])
    return {"wall_s": wall, "first_shard_s": found[0] if found else None, "driver_peak_mb": rss / 1024,
            "summary": done.stdout.strip().splitlines()[-1]}


def baseline(root: Path, tokenizer: Path) -> float:
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", BASELINE, str(root), str(tokenizer)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,400000,1600000")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "goldfinch-data-prep-scale"))
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-thread encode_batch")
    args = parser.parse_args()
    cache = Path(args.cache)
    sizes = [int(s) for s in args.sizes.split(",")]
    roots = {n: corpus(cache, n) for n in sizes}
    tokenizer = tokenizer_for(cache, roots[sizes[0]])
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
            load = os.getloadavg()[0]
            row = {"documents": n, "load_before": load, **data_prep(roots[n], tokenizer, Path(tmp) / "out")}
        row["encode_1thread_s"] = None if args.no_baseline else baseline(roots[n], tokenizer)
        if row["encode_1thread_s"]:
            row["ratio"] = row["wall_s"] / row["encode_1thread_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    small, big = rows[0], rows[-1]
    print(f"cpus {os.cpu_count()}; driver peak {small['driver_peak_mb']:.0f} MB at {small['documents']:,} docs, "
          f"{big['driver_peak_mb']:.0f} MB at {big['documents']:,} "
          f"({big['driver_peak_mb'] / small['driver_peak_mb']:.2f}x, "
          f"+{big['driver_peak_mb'] - small['driver_peak_mb']:.0f} MB; goal <= 1.3x and <= +64 MB)")


if __name__ == "__main__":
    main()
