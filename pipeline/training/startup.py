"""Where a run starts: the newest loadable checkpoint (in the phase it was saved in), or a fresh
model for phase 0, optionally initialised from another run (`train.init_from`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import checkpointing, freezing, peft_base
from .. import runs
from ..errors import PipelineError
from .init_from import load_matching
from .phase_switch import build_phase_engine, new_model
from .train_state import TrainState


@dataclass(frozen=True)
class Start:
    """What training continues from; the loop takes the engine and state over from here."""
    engine: object
    trainable: int
    state: TrainState
    resumed_from: str | None = None
    init_report: dict = field(default_factory=dict)


def _checkpoint_step(tag_dir: Path) -> int:
    marker = runs.read_marker(tag_dir)
    return -1 if marker is None else int(marker.step)  # unreadable: load_newest reports it


def _restored_state(client: dict, phase: int, tag_dir: Path) -> TrainState:
    """The checkpoint's train state; its phase must be the one its step falls in under this
    run's freeze schedule (the engine was built for that one)."""
    state = TrainState.from_client_state(client, phase)
    if state.phase != phase:
        raise PipelineError(f"{tag_dir} was saved in freeze phase {state.phase}, but this run's "
                            f"freeze.phases put step {state.step} in phase {phase}: resume it with "
                            "the freeze schedule it was trained with")
    return state


def _resume_tags(resume: str, ckpt_dir: Path) -> tuple[Path, list[str]]:
    if resume == "never":
        return ckpt_dir, []
    if resume == "auto":
        return ckpt_dir, runs.candidates(ckpt_dir)
    path = Path(resume)
    return path.parent, [path.name]


def start_model(cfg, resuming: bool):
    """A fresh model with train.init_from loaded (on resume only under PEFT, whose slim checkpoints
    lack the base), and a PEFT model's base identity attached; also the init_from report."""
    model = new_model(cfg)
    report = {}
    if cfg.train.init_from and (cfg.peft.method or not resuming):
        report = load_matching(model, cfg.train.init_from, cfg.train.init_from_cross_kind)
    if cfg.peft.method:
        peft_base.identify(model, cfg.peft, cfg.train.init_from)
    return model, report


def open_run(cfg, dist, ckpt_dir: Path, stream) -> Start:
    """The engine and counters training continues from; restores the stream and RNG in place."""
    root, tags = _resume_tags(cfg.train.resume, ckpt_dir)
    engine, built = None, None
    for tag in tags:
        step = _checkpoint_step(root / tag)
        # written by another number of ranks: loaded through DeepSpeed's universal checkpoint
        universal = checkpointing.needs_universal(cfg.train, runs.saved_world(root / tag), dist.world)
        phase = freezing.phase_at(cfg.freeze, max(step - 1, 0))  # the phase that saved it
        if engine is None or (phase, universal) != built:
            if engine is not None:
                engine.destroy()
            model, _ = start_model(cfg, resuming=True)
            identity = peft_base.identity_of(model)
            engine, trainable = build_phase_engine(cfg, phase, dist.world, dist.device, model,
                                                   universal=universal)
            built = (phase, universal)
        peft_base.check_base(root / tag, identity)
        found = checkpointing.load_newest(engine, root, dist.rank, tags=[tag], universal=universal)
        if found is None:
            continue
        _, client, rank_state = found
        stream.load_state_dict(rank_state["stream"])
        checkpointing.set_rng_state(rank_state["rng"])
        return Start(engine, trainable, _restored_state(client, phase, root / tag), resumed_from=tag)
    if cfg.train.resume not in ("auto", "never"):
        raise PipelineError(f"train.resume={cfg.train.resume}: not a complete, loadable checkpoint")
    if tags:  # starting over here would truncate metrics.jsonl and the MLflow history
        raise PipelineError(
            f"none of the {len(tags)} complete checkpoint(s) under {root} could be loaded (see the "
            "warnings above); nothing was changed. Fix or remove them, or start this run over with "
            "train.resume=never, or give a new run its own train.run_name")
    if engine is not None:
        engine.destroy()
    model, report = start_model(cfg, resuming=False)
    engine, trainable = build_phase_engine(cfg, 0, dist.world, dist.device, model)
    return Start(engine, trainable, TrainState(), init_report=report)
