"""The whole run, as phases of tasks; the driver only lists files and folds per-unit summaries.

1. list the input files and cut them into work units (sizes only);
2. scan tasks: check and count each unit's documents, draw its tokenizer sample, emit dedup keys;
3. plan (driver, O(units)): numbering, val top-up, skipped documents, the input digest;
4. the tokenizer: given, already in the output, or trained by a task on the units' samples;
5. dedup tasks (data.dedup): one per digest partition;
6. build tasks: tokenize each unit into staged shards (or keep its verified ones);
7. publish: copy staged shards to their final names `train-000000.tar`, ... in unit order, write
   the manifest, drop the staging area.
Shard names and bytes depend only on the input and the config. `data.executor=local` runs every
task in this process: the plain reference path that tests compare Ray against.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter

from . import manifest as manifest_file
from . import shard_format
from . import output_dir, text_codec, tokenizer
from .build_task import STAGED_DIR, BuildSpec, build_unit, staged_name
from .config import DataConfig, recorded
from .dedup import find_duplicates, group_of, groups_for, partitions_for
from .errors import UserError
from .executor import choose, make_executor
from .plan import Plan, make_plan, unit_digest
from .progress import Bar
from .readers import ReadOptions
from .scan_task import SHOWN_PER_REASON, ScanOptions, scan_unit
from .sources import BINIDX, find_corpus
from .storage import Store, credential_env, is_remote
from .units import make_units

KILL_AFTER_ENV = "DATA_PREP_KILL_AFTER_SHARDS"  # test hook: SIGKILL the driver after N built shards


def train_from_samples(vocab_size: int, *samples: list[str], progress=None) -> str:
    """The BPE tokenizer.json trained on the units' samples, in unit order (a task)."""
    return tokenizer.train_tokenizer((text for texts in samples for text in texts), vocab_size)


def _skip_summary(counts: Counter) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items())) or "none"


class Run:
    """One invocation: the config, the output store, the executor and what the phases produced."""

    def __init__(self, cfg: DataConfig, progress: bool | None):
        self.cfg, self.progress = cfg, progress
        self.store = Store(cfg.output)
        self.config = recorded(cfg)
        self.corpus = find_corpus(cfg.input)
        self.given = text_codec.resolve(cfg.tokenizer) if cfg.tokenizer else None
        if self.corpus.files[0].kind == BINIDX and self.given is None:
            raise UserError(f"data.input={cfg.input!r} is a binidx corpus (token ids): set data.tokenizer "
                            "to the tokenizer it was made with (rwkv-world, or its tokenizer.json)")
        self.units = make_units(self.corpus, cfg.unit_bytes)
        vocab, eot = (self.given.vocab_size, self.given.eot_id) if self.given else (0, -1)
        self.read = ReadOptions(cfg.text_field, cfg.on_invalid_utf8, vocab, eot)
        remote = is_remote(cfg.input) or is_remote(cfg.output)
        self.executor_kind = choose(cfg.executor, self.corpus.nbytes, cfg.auto_local_bytes)
        self.executor = make_executor(self.executor_kind, cfg.num_cpus, credential_env() if remote else {})
        self.built_shards = 0

    def bar(self, desc: str, total: int, unit: str) -> Bar:
        return Bar(desc, total, unit, self.progress)

    def scan(self, train_tokenizer: bool) -> tuple[Plan, list[list]]:
        cfg, total = self.cfg, max(1, self.corpus.nbytes)
        parts = partitions_for(len(self.units)) if cfg.dedup else 0
        calls = []
        for unit in self.units:
            share = -(-cfg.tokenizer_sample_bytes * unit.nbytes // total) if train_tokenizer else 0
            calls.append((unit, ScanOptions(self.read, cfg.seed, cfg.val_fraction, cfg.min_val_docs, parts, share)))
        scans = [None] * len(calls)
        bar = self.bar("scan", self.corpus.nbytes, "B")
        try:
            outs = self.executor.run(scan_unit, calls, 2 + parts, lambda i, s: scans.__setitem__(i, s), bar)
        finally:
            bar.close()
        return make_plan(self.corpus, self.units, scans, cfg, SHOWN_PER_REASON), outs

    def codec(self, scanned: list[list]) -> text_codec.Codec:
        if self.given is not None:
            return self.given
        existing = self.store.read_bytes("tokenizer.json")
        if existing is not None:
            return text_codec.BpeCodec(existing.decode("utf-8", "replace"), self.store.url("tokenizer.json"))
        samples = [out[1] for out in scanned]
        got = []
        self.executor.run(train_from_samples, [(self.cfg.vocab_size, *samples)], 1,
                          lambda i, text: got.append(text), self.bar("tokenizer", 1, "it"))
        return text_codec.BpeCodec(got[0])

    def dedup(self, scanned: list[list]) -> list[list]:
        """Per dedup partition: [count, dropped copies of unit group 0, 1, ...]."""
        if not self.cfg.dedup:
            return []
        n, groups = len(self.units), groups_for(len(self.units))
        calls = [(groups, n, *[out[2 + p] for out in scanned]) for p in range(partitions_for(n))]
        return self.executor.run(find_duplicates, calls, groups + 1, lambda i, c: None,
                                 self.bar("dedup", len(calls), "part"))

    def build(self, plan: Plan, codec: text_codec.Codec, dups: list[list]) -> list[dict]:
        previous = self._published(plan)
        groups = groups_for(len(self.units))
        calls = []
        for u, unit in enumerate(self.units):
            spec = BuildSpec(unit, unit_digest(plan, u, self.config, codec.sha256), plan.first_docs[u],
                             plan.first_lines[u], self.read, self.cfg.seed, self.cfg.val_fraction,
                             plan.to_val.get(u, frozenset()), plan.to_train.get(u, frozenset()),
                             self.cfg.shard_bytes, self.store.root, tuple(previous.get(u, ())))
            calls.append((spec, text_codec.spec_of(codec),
                          *[d[1 + group_of(u, len(self.units), groups)] for d in dups]))
        records = [None] * len(calls)
        kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)

        def done(i: int, record: dict) -> None:
            records[i] = record
            if record["built"]:
                self.built_shards += len(record["shards"])
                if kill_after and self.built_shards >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)

        bar = self.bar("data_prep", plan.documents, "doc")
        try:
            self.executor.run(build_unit, calls, 1, done, bar)
        finally:
            bar.close()
        return records

    def _published(self, plan: Plan) -> dict[int, list]:
        """unit -> (name, sha256, file_bytes) of its shards in a complete earlier manifest."""
        try:
            old = shard_format.read_manifest(self.store) or {}
        except UserError:  # not JSON: nothing published can be trusted
            return {}
        if old.get("input", {}).get("digest") != plan.input_digest:
            return {}
        found: dict[int, list] = {}
        for split in shard_format.SPLITS:
            for s in old.get("shards", []):
                if s.get("split") == split and "unit" in s:
                    found.setdefault(s["unit"], []).append((s["name"], s["sha256"], s["file_bytes"]))
        return found

    def publish(self, records: list[dict]) -> list[dict]:
        """Final names in unit order; staged shards copied there (manifest first removed, so the
        dir never looks complete while shards change)."""
        counters: Counter = Counter()
        shards, copies = [], []
        for record in records:
            for s in record["shards"]:
                name = shard_format.shard_name(s["split"], counters[s["split"]])
                counters[s["split"]] += 1
                shards.append({**s, "name": name, "unit": record["unit"]})
                if record["where"] == "staged":
                    copies.append((staged_name(record["unit"], s["split"], s["index"]), name))
        if copies:
            self.store.remove(shard_format.MANIFEST)
            for src, dst in copies:
                self.store.publish(src, dst)
        output_dir.remove_stale_shards(self.store, {s["name"] for s in shards})
        return sorted(shards, key=lambda s: (shard_format.SPLITS.index(s["split"]), s["name"]))


def _phases(job: Run, record: dict | None) -> tuple[Plan, text_codec.Codec, list[dict]]:
    """Scan, plan, tokenizer, dedup, build: everything that runs tasks."""
    store = job.store
    train = job.given is None and store.read_bytes("tokenizer.json") is None
    plan, scanned = job.scan(train)
    for line in plan.skip_lines:
        print(line, file=sys.stderr)
    if plan.documents == 0:
        raise UserError(f"no usable documents in {job.corpus.description} "
                        f"(skipped: {_skip_summary(plan.skipped)})")
    output_dir.check_input(store, record, plan.input_digest)
    if record is None:
        output_dir.write_run_record(store, job.config, plan.input_digest)
    codec = job.codec(scanned)
    if store.read_bytes(codec.file) is None:
        store.write_bytes(codec.file, codec.file_bytes())
    return plan, codec, job.build(plan, codec, job.dedup(scanned))


def run(cfg: DataConfig, progress: bool | None = None) -> dict:
    """Build (or finish) the data dir described by cfg; returns the manifest."""
    t0 = time.perf_counter()
    job = Run(cfg, progress)
    store = job.store
    record = output_dir.open_output(store, job.config, cfg.overwrite)
    if job.given is not None:
        output_dir.check_tokenizer(store, job.given.sha256, cfg.tokenizer)
    try:
        plan, codec, records = job.executor.drive(lambda: _phases(job, record))
    finally:
        job.executor.close()
    shards = job.publish(records)
    manifest = manifest_file.build(plan, shards, records, job.config, text_codec.describe(codec))
    shard_format.write_manifest(store, manifest)
    store.remove_tree(STAGED_DIR)
    print(summary(store.url(), manifest, job, len(shards), time.perf_counter() - t0), flush=True)
    return manifest


def summary(out: str, manifest: dict, job: Run, shards: int, seconds: float) -> str:
    t, s = manifest["totals"], manifest["splits"]
    return (f"data_prep: {out}: {s['train']['shards']} train + {s['val']['shards']} val shards, "
            f"{t['documents']:,} documents ({s['val']['documents']:,} val), {t['tokens']:,} tokens, "
            f"{t['bytes'] / 1e6:.1f} MB of text, vocab {manifest['tokenizer']['vocab_size']:,}, "
            f"skipped {t['skipped_documents']:,} ({_skip_summary(Counter(t['skipped']))}); "
            f"{len(job.units)} units, {job.built_shards} shards built, {shards - job.built_shards} "
            f"verified and kept; executor {job.executor_kind}; {seconds:.1f} s")
