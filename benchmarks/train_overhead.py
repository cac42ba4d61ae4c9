"""Training overhead on CPU, measured side by side in one run:

1. a DeepSpeed (ZeRO-1, fp32) optimizer step vs a plain torch AdamW step, same tiny model and batch
   (goal: <= 1.15x);
2. the training loader's tokens/s (pipeline.data: the global window order, shard reading and
   joining, one rank's slices) vs the trainer's consumption (goal: >= 50x);
3. what checking each shard's sha256 on its first read (data.verify_shards, on by default) adds
   to the loader's first epoch (goal: < 5%).

    python benchmarks/train_overhead.py [--data data/default] [--steps 12] [--zero-stage 1]
        [--vocab 16384]

The model is goldfinch-tiny with a --vocab-wide head (16,384, the default run's tokenizer) even
when the data's tokenizer is smaller, as the synthetic data dir's 300 tokens are when --data is
not given: the head is a large part of the step at this size.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import _repo_path  # noqa: E402,F401  (the packages and tests/ helpers, not benchmarks/*.py)


def step_time(step_fn, batches, warmup: int = 2) -> float:
    for b in batches[:warmup]:
        step_fn(b)
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        step_fn(b)
    return (time.perf_counter() - t0) / (len(batches) - warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a built data dir (default: a synthetic one)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--zero-stage", type=int, default=1, choices=(0, 1, 2, 3))
    parser.add_argument("--vocab", type=int, default=16384, help="model vocabulary (>= the data's)")
    args = parser.parse_args()

    from model import build_model, load_model_config
    from pipeline.config import TrainConfig
    from pipeline.data.data_loader import DataDir
    from pipeline.training.distributed import init_distributed
    from pipeline.training.engine import build_engine, build_optimizer

    data_path = args.data
    if data_path is None:
        from pipeline_helpers import make_data_dir
        data_path = Path(tempfile.mkdtemp()) / "data"
        make_data_dir(data_path, docs_per_shard=(400, 400), val_docs=(10,), max_len=400)
    data = DataDir.open(data_path)
    stream = train_stream(data, args, 0)
    batches = [stream.next_batch(args.micro_batch) for _ in range(args.steps)]

    dist = init_distributed()
    vocab = max(args.vocab, data.vocab_size)
    cfg = load_model_config("goldfinch-tiny", [f"vocab_size={vocab}", f"ctx_len={args.ctx}"])
    train = TrainConfig(micro_batch=args.micro_batch, zero_stage=args.zero_stage, precision="fp32")

    def loss_of(model, batch):
        loss, _ = model(batch[:, :-1], targets=batch[:, 1:])
        return loss

    torch.manual_seed(0)
    plain = build_model(cfg)
    opt = build_optimizer(plain, train)

    def plain_step(batch):
        opt.zero_grad(set_to_none=True)
        loss_of(plain, batch).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), train.grad_clip)
        opt.step()

    torch.manual_seed(0)
    engine = build_engine(build_model(cfg), train, dist.world)

    def ds_step(batch):
        engine.backward(loss_of(engine, batch))
        engine.step()

    # alternate the two, three rounds each, so that machine noise hits both alike
    plain_t = ds_t = float("inf")
    for _ in range(3):
        plain_t = min(plain_t, step_time(plain_step, batches))
        ds_t = min(ds_t, step_time(ds_step, batches))
    tokens = args.micro_batch * args.ctx
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, goldfinch-tiny (vocab {vocab}), "
          f"batch {args.micro_batch}x{args.ctx}, ZeRO-{args.zero_stage}")
    print(f"plain torch step   {plain_t * 1000:8.1f} ms   {tokens / plain_t:8.0f} tok/s")
    print(f"deepspeed step     {ds_t * 1000:8.1f} ms   {tokens / ds_t:8.0f} tok/s")
    print(f"deepspeed / plain  {ds_t / plain_t:.3f}x   (goal <= 1.15x)")

    loader = train_stream(data, args, 1)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        n += loader.next_batch(args.micro_batch).numel()
    loader_rate = n / (time.perf_counter() - t0)
    print(f"loader             {loader_rate:8.0f} tok/s")
    print(f"loader / trainer   {loader_rate / (tokens / ds_t):.1f}x   (goal >= 50x)")

    # one epoch of the train split, as a process reads it first (fresh DataDirs, so each checked
    # run hashes every shard once); alternated, best of five
    plain_epoch, checked_epoch = [], []
    for _ in range(5):
        plain_epoch.append(epoch_seconds(DataDir.open(data_path, verify_shards=False), args))
        checked_epoch.append(epoch_seconds(DataDir.open(data_path, verify_shards=True), args))
    plain_t, checked_t = min(plain_epoch), min(checked_epoch)
    print(f"loader, 1st epoch  {plain_t:8.2f} s   with sha256 checks {checked_t:8.2f} s   "
          f"(+{(checked_t / plain_t - 1) * 100:.1f}%, goal < 5%)")


def train_stream(data, args, seed: int):
    """One rank's training micro-batches, as the trainer reads them (default shuffle buffer)."""
    from pipeline.config import TrainDataConfig
    from pipeline.data.global_batches import GlobalBatches

    d = TrainDataConfig()
    return GlobalBatches([data], [1.0], ["data"], args.ctx, seed, True, d.shuffle_shards,
                         args.micro_batch, 1, 0, 1, d.read_ahead)


def epoch_seconds(data, args) -> float:
    stream = train_stream(data, args, 1)
    t0 = time.perf_counter()
    for _ in range(stream.orders[0].per_epoch // args.micro_batch):
        stream.next_batch(args.micro_batch)
    seconds = time.perf_counter() - t0
    stream.close()
    return seconds


if __name__ == "__main__":
    main()
