"""The whole run: check the output dir, plan, get the tokenizer, build the shards, write the manifest.

Shards are built by Ray tasks (`ray.init()` locally, or the cluster at RAY_ADDRESS), one task per
shard, each writing its tar straight into the output dir. While a local Ray instance starts (a few
seconds, mostly waiting), the driver builds shards itself from the same queue; which process builds
a shard never changes its bytes. `data.executor=local` builds everything in this process: the plain
reference path that tests compare the Ray path against.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path

from . import manifest as manifest_file
from . import atomic, output_dir, text_codec, tokenizer
from .config import DataConfig, recorded
from .errors import UserError
from .readers import Skipped, read_documents
from .sharding import Plan, ShardSpec, make_plan, tokenizer_sample
from .sources import find_corpus
from .writer import ShardJob, verified_record, write_shard

KILL_AFTER_ENV = "DATA_PREP_KILL_AFTER_SHARDS"  # test hook: SIGKILL the driver after N built shards
SKIPS_SHOWN_PER_REASON = 10


class SkipReporter:
    """One stderr line per skipped document (the first few of each reason), then a count."""

    def __init__(self):
        self.counts: Counter = Counter()

    def __call__(self, item: Skipped) -> None:
        self.counts[item.reason] += 1
        if self.counts[item.reason] <= SKIPS_SHOWN_PER_REASON:
            print(f"data_prep: skipped {item.source} ({item.reason}): {item.detail}", file=sys.stderr)

    def close(self) -> None:
        for reason, n in sorted(self.counts.items()):
            if n > SKIPS_SHOWN_PER_REASON:
                print(f"data_prep: ... {n - SKIPS_SHOWN_PER_REASON} more skipped ({reason})", file=sys.stderr)


def _skip_summary(counts: Counter) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items())) or "none"


def obtain_codec(cfg: DataConfig, out: Path, plan: Plan) -> text_codec.Codec:
    """The tokenizer for this output: given (a tokenizer.json or rwkv-world), already there, or a
    BPE trained on a sample. Its file is written into the output dir."""
    if cfg.tokenizer:
        codec = text_codec.resolve(cfg.tokenizer)
        output_dir.check_tokenizer(out, codec.sha256, cfg.tokenizer)
    elif (out / "tokenizer.json").is_file():
        codec = text_codec.BpeCodec((out / "tokenizer.json").read_text(encoding="utf-8"),
                                    str(out / "tokenizer.json"))
    else:
        sample = tokenizer_sample(plan, cfg.tokenizer_sample_bytes, cfg.seed)
        cut = dict((ref.source, take) for ref, take in sample)
        texts = (text[:cut[ref.source]] for ref, text in
                 read_documents([ref for ref, _ in sample], cfg.text_field, cfg.on_invalid_utf8))
        codec = text_codec.BpeCodec(tokenizer.train_tokenizer(texts, cfg.vocab_size))
    if not (out / codec.file).is_file():
        atomic.write_bytes(out / codec.file, codec.file_bytes())
    return codec


class Builder:
    """Hands out shards to whoever builds them, gathers done-records, drives the progress bar."""

    def __init__(self, plan: Plan, job: ShardJob, codec: text_codec.CodecSpec, progress: bool | None):
        from tqdm import tqdm

        # biggest first, so the last shards to finish are small ones
        self.queue = deque(sorted(plan.shards, key=lambda s: (-s.nbytes, s.name)))
        self.job, self.codec = job, codec
        self.records: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
        self.built = self.reused = self.tokens = 0
        self.total_shards = len(plan.shards)
        self.bar = tqdm(total=plan.documents, unit="doc", desc="data_prep", disable=progress is False
                        or (progress is None and not sys.stderr.isatty()), dynamic_ncols=True)

    def take(self) -> ShardSpec | None:
        with self.lock:
            return self.queue.popleft() if self.queue else None

    def take_all(self) -> list[ShardSpec]:
        with self.lock:
            rest, self.queue = list(self.queue), deque()
            return rest

    def done(self, record: dict) -> None:
        with self.lock:
            self.records[record["name"]] = record
            if record["reused"]:
                self.reused += 1
            else:
                self.built += 1
            self.tokens += record["tokens"]
            self.bar.update(record["samples"])
            self.bar.set_postfix(tokens=f"{self.tokens:,}", shards=f"{len(self.records)}/{self.total_shards}")
            if self.kill_after and self.built >= self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def keep_verified(self) -> None:
        """Shards a finished run left intact are checked here, so a complete dir needs no Ray."""
        for shard in self.take_all():
            record = verified_record(Path(self.job.output), shard, self.job.tokenizer_sha)
            if record is None:
                self.queue.append(shard)
            else:
                self.done({**record, "reused": True})

    def build_here(self, stop: threading.Event | None = None) -> None:
        while stop is None or not stop.is_set():
            shard = self.take()
            if shard is None:
                return
            self.done(write_shard(shard, self.job, self.codec))


def _ray_task(shard: ShardSpec, job: ShardJob, codec: text_codec.CodecSpec) -> dict:
    """One shard in a Ray worker; the tokenizer uses the one CPU the task was given."""
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    return write_shard(shard, job, codec)


def _start_ray(cfg: DataConfig) -> bool:
    """Join RAY_ADDRESS or start a local instance; False when Ray was already up (tests)."""
    import ray

    if ray.is_initialized():
        return False
    opts = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(**opts)
        except (ConnectionError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot join the Ray cluster at RAY_ADDRESS={address}: {first} (a cluster "
                            "with token auth also needs RAY_AUTH_MODE=token and its token)") from None
    else:
        # "local": a new instance even if `ray start` left one on this machine; num_cpus=None lets
        # Ray count the CPUs this process may use
        ray.init(address="local", num_cpus=cfg.num_cpus, **opts)
    return True


def build_with_ray(cfg: DataConfig, builder: Builder) -> None:
    import ray

    stop, errors = threading.Event(), []

    def assist():
        try:
            builder.build_here(stop)
        except BaseException as err:  # re-raised in the main thread below
            errors.append(err)

    helper = None
    if not ray.is_initialized():
        helper = threading.Thread(target=assist, name="data_prep-assist", daemon=True)
        helper.start()
    try:
        started = _start_ray(cfg)
    except BaseException:
        stop.set()  # let the helper finish its shard, so no tar is cut off mid-write
        if helper is not None:
            helper.join()
        raise
    stop.set()
    try:
        rest = builder.take_all()
        if rest:
            remote = ray.remote(num_cpus=1, max_retries=2)(_ray_task)
            tok_ref = ray.put(builder.codec)
            pending = [remote.remote(shard, builder.job, tok_ref) for shard in rest]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                try:
                    builder.done(ray.get(ready[0]))
                except ray.exceptions.RayTaskError as err:
                    if isinstance(err.cause, UserError):
                        raise err.cause from None
                    raise
        if helper is not None:
            helper.join()
        if errors:
            raise errors[0]
    finally:
        if started:
            ray.shutdown()


def run(cfg: DataConfig, progress: bool | None = None) -> dict:
    """Build (or finish) the data dir described by cfg; returns the manifest."""
    t0 = time.perf_counter()
    out = Path(cfg.output)
    config = recorded(cfg)
    corpus = find_corpus(cfg.input)
    record = output_dir.open_output(out, config, cfg.overwrite)
    reporter = SkipReporter()
    plan = make_plan(corpus, cfg, reporter)
    reporter.close()
    if plan.documents == 0:
        raise UserError(f"no usable documents in {corpus.description} "
                        f"(skipped: {_skip_summary(plan.skipped)})")
    output_dir.check_input(out, record, plan.input_digest)
    if record is None:
        output_dir.write_run_record(out, config, plan.input_digest)
    codec = obtain_codec(cfg, out, plan)
    info = text_codec.describe(codec)
    job = ShardJob(str(out.resolve()), codec.sha256, cfg.text_field, cfg.on_invalid_utf8)
    output_dir.remove_stale_shards(out, {s.name for s in plan.shards})
    builder = Builder(plan, job, text_codec.spec_of(codec), progress)
    try:
        builder.keep_verified()
        if cfg.executor == "local" or not builder.queue:
            builder.build_here()
        else:
            build_with_ray(cfg, builder)
    finally:
        builder.bar.close()
    records = [builder.records[s.name] for s in plan.shards]
    manifest = manifest_file.build(plan, records, config, info)
    manifest_file.write(out, manifest)
    print(summary(out, manifest, builder, time.perf_counter() - t0), flush=True)
    return manifest


def summary(out: Path, manifest: dict, builder: Builder, seconds: float) -> str:
    t, s = manifest["totals"], manifest["splits"]
    return (f"data_prep: {out}: {s['train']['shards']} train + {s['val']['shards']} val shards, "
            f"{t['documents']:,} documents ({s['val']['documents']:,} val), {t['tokens']:,} tokens, "
            f"{t['bytes'] / 1e6:.1f} MB of text, vocab {manifest['tokenizer']['vocab_size']:,}, "
            f"skipped {t['skipped_documents']:,} ({_skip_summary(Counter(t['skipped']))}); "
            f"{builder.built} shards built, {builder.reused} verified and kept; {seconds:.1f} s")
