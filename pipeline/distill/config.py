"""distill.* keys and the start-up checks of a distillation run: every mistake named before any
process group, engine or teacher is started."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from common.errors import UserError

from .objective import NEED_TEACHER, parse_loss
from .teacher import TeacherInfo, describe


@dataclass
class DistillConfig:
    teacher: Optional[str] = None  # a local Hugging Face causal-LM dir or an exported model dir
    temperature: float = 1.0       # of both softmaxes in the KL (ARWKV and RADLADS use 1)
    kl_chunk: int = 1024           # tokens per chunk of the KL: memory ~ kl_chunk x vocab x 4 bytes x 4


def phase_losses(cfg) -> list[dict[str, float]]:
    """Each freeze phase's parsed loss (one `ce` phase when there are none)."""
    phases = cfg.freeze.phases
    return [parse_loss(p.loss, f"freeze.phases[{i}].loss") for i, p in enumerate(phases)] or [{"ce": 1.0}]


def validate(cfg) -> TeacherInfo | None:
    """Check distill.* against the phases and the model; returns the teacher's description."""
    d = cfg.distill
    if not d.temperature > 0:
        raise UserError(f"distill.temperature={d.temperature!r}: must be > 0")
    if d.kl_chunk <= 0:
        raise UserError(f"distill.kl_chunk={d.kl_chunk!r}: must be a positive number of tokens")
    losses = phase_losses(cfg)
    needing = [i for i, w in enumerate(losses) if set(w) & set(NEED_TEACHER)]
    if needing and not d.teacher:
        raise UserError(f"freeze.phases[{needing[0]}].loss={cfg.freeze.phases[needing[0]].loss!r} "
                        "needs a teacher: set distill.teacher")
    if not d.teacher:
        return None
    info = describe(d.teacher)
    vocab = cfg.model.vocab_size
    if vocab is not None and info.vocab_size < vocab:
        raise UserError(f"distill.teacher={d.teacher}: its vocabulary ({info.vocab_size}) is smaller "
                        f"than the student's model.vocab_size={vocab}")
    if any("align" in w for w in losses):
        if (info.n_layer, info.n_embd) != (cfg.model.n_layer, cfg.model.n_embd):
            raise UserError(f"distill.teacher={d.teacher} has {info.n_layer} layers of width "
                            f"{info.n_embd}, the student model.n_layer={cfg.model.n_layer}, "
                            f"model.n_embd={cfg.model.n_embd}: the align loss pairs layer with "
                            "layer (build the student with python -m model.convert from-transformers)")
    return info


def check_tokenizer(info: TeacherInfo, data_sha: str, data_path: str, allow_other: bool) -> None:
    """The data must be tokenized with the teacher's tokenizer, or ids mean other text to it."""
    from ..training.run_guard import file_sha256

    if info.tokenizer is None or allow_other:
        return
    teacher_sha = file_sha256(info.tokenizer)
    if teacher_sha != data_sha:
        raise UserError(f"distill.teacher={info.path}: its tokenizer.json (sha256 {teacher_sha[:16]}...) "
                        f"is not the one the data dir {data_path} was built with ({data_sha[:16]}...): "
                        f"build the data with data.tokenizer={info.tokenizer}, or set "
                        "train.allow_other_tokenizer=true if the vocabularies agree on purpose")


def load_teacher(cfg, device):
    """The frozen teacher on `device` (bf16 when training in bf16), partitioned under ZeRO-3;
    None without distill.teacher."""
    import torch

    from .teacher import Teacher

    if not cfg.distill.teacher:
        return None
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
    teacher = Teacher(describe(cfg.distill.teacher), device, dtype)
    if cfg.train.zero_stage == 3:
        teacher.partition(cfg.train)
    return teacher


def objective_for(cfg, phase: int, teacher):
    """The Objective of freeze phase `phase`; it reports its parts when there is a teacher."""
    from .objective import Objective

    d = cfg.distill
    return Objective(phase_losses(cfg)[phase], teacher, d.temperature, d.kl_chunk,
                     report_parts=teacher is not None)


TRAINING_CHOICES = ("ctx_len", "cache_dtype")  # a run's, not the student's


def student_model_keys(init_from: str | None) -> dict | None:
    """The model keys of a train.init_from built by `model.convert from-transformers` (it has
    teacher.json beside its config.json), training choices left out; None for anything else."""
    import json
    from pathlib import Path

    src = Path(init_from) if init_from else None
    if src is None or not (src / "teacher.json").is_file() or not (src / "config.json").is_file():
        return None
    keys = json.loads((src / "config.json").read_text())
    return {k: v for k, v in keys.items() if k not in TRAINING_CHOICES}


def check_student(cfg) -> None:
    """A student's model keys are layered under the run's (pipeline/config.py); a key the run sets
    to another value would make init_from drop tensors silently (q/k/v biases) or fail late on
    shapes, so it is refused here, naming each key."""
    from dataclasses import asdict

    student = student_model_keys(cfg.train.init_from)
    if student is None:
        return
    ours = asdict(cfg.model)
    differ = [f"model.{k}={ours.get(k)!r} (the student's: {v!r})" for k, v in sorted(student.items())
              if ours.get(k) != v]
    if differ:
        raise UserError(f"train.init_from={cfg.train.init_from} is a student built by "
                        f"from-transformers, but this run sets other model keys: {'; '.join(differ)}. "
                        "Drop them: the student's own keys are the run's model unless set")
