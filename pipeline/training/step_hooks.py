"""What happens after each optimizer step, in order: validation, the record logged (metrics.jsonl,
tracking, console), the bad-step guard, a checkpoint (on schedule, at the end, or when a signal
asks to stop), and periodic evaluation. `after_step` returns True when the run is to stop."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import checkpointing
from .distributed import Dist
from .metrics import MetricsLog
from .preemption import StopRequest
from .progress import Progress
from .train_state import TrainState
from .train_step import Trainee
from .. import runs
from ..errors import PipelineError
from ..instruments import Instruments
from ..eval import periodic


@dataclass
class StepHooks:
    cfg: object
    dist: Dist
    run_dir: Path
    ckpt_dir: Path
    metrics: MetricsLog
    tracker: object
    progress: Progress
    stop: StopRequest
    validate: Callable[[object], float] | None  # engine -> val_loss; None: no validation
    loader: object  # whose state_dict is the data position (the prefetcher, or the stream)
    about: dict  # the COMPLETE marker's self-description (runs.Marker)
    data_path: str
    instruments: Instruments
    bad_in_a_row: int = 0
    preempted: bool = False

    def after_step(self, record: dict, applied: bool, state: TrainState, trainee: Trainee) -> bool:
        self.log(record, trainee)
        self.guard(applied, state.step)
        self.preempted = self.stop.agreed(self.dist.device)
        if self.checkpoint_due(state.step):
            self.checkpoint(state, trainee)
        if periodic.due(self.cfg.train, state.step) and not self.preempted:
            self.evaluate(state.step, trainee)
        if self.preempted and self.dist.is_main:
            self.progress.write(f"stopped by signal {self.stop.signal or 'on another rank'} at step "
                                f"{state.step}; checkpoint saved, re-run the same command to resume")
        return self.preempted

    def log(self, record: dict, trainee: Trainee) -> None:
        t, step = self.cfg.train, record["step"]
        if self.validate is not None and (step % t.val_every == 0 or step == t.max_steps):
            with self.instruments.validation(trainee.engine.module, step):
                record["val_loss"] = self.validate(trainee.engine)
        self.metrics.write(record)
        self.tracker.log_step(record)
        logged = (t.log_every and step % t.log_every == 0) or "val_loss" in record
        self.progress.update(record, log=logged)
        self.instruments.after_step(step)

    def guard(self, applied: bool, step: int) -> None:
        """Stop after train.max_bad_steps steps in a row whose update was skipped."""
        self.bad_in_a_row = 0 if applied else self.bad_in_a_row + 1
        limit = self.cfg.train.max_bad_steps
        if self.bad_in_a_row >= limit:
            raise PipelineError(
                f"{self.bad_in_a_row} consecutive steps had a non-finite loss or gradients (last: step "
                f"{step}, train.max_bad_steps={limit}); stopping. The last good checkpoint under "
                f"{self.ckpt_dir} is kept: lower train.lr or check the data, then re-run to resume")

    def checkpoint_due(self, step: int) -> bool:
        t = self.cfg.train
        return bool(t.save_every and step % t.save_every == 0) or step == t.max_steps or self.preempted

    def checkpoint(self, state: TrainState, trainee: Trainee) -> None:
        rank_state = {"stream": self.loader.state_dict(), "rng": checkpointing.rng_state()}
        tag = checkpointing.save(trainee.engine, self.ckpt_dir, state, rank_state, self.dist.rank,
                                 self.cfg.train.keep_last, self.about, self.instruments)
        where = str((self.ckpt_dir / tag).resolve())
        self.tracker.log_event(json.dumps({"step": state.step, "path": where}),
                               f"{runs.CHECKPOINTS}/{tag}.json")

    def evaluate(self, step: int, trainee: Trainee) -> None:
        if self.dist.is_main:
            periodic.evaluate_now(trainee.engine.module, self.data_path, self.cfg.train, step,
                                  self.run_dir, self.tracker, self.dist.device)
        torch.distributed.barrier()
