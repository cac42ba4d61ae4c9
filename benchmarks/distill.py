"""Distilling a transformer into GoldFinch vs training the same student on CE alone.

    python benchmarks/distill.py [--out DIR] [--teacher-steps 200] [--align 40] [--kl 80]
        [--arch goldfinch]

On data/default: trains a Llama teacher (llama-tiny), builds its GoldFinch student with
`model.convert from-transformers`, then, at equal steps and tokens, (a) distils it (align: the
mixers alone; then KL, everything), (b) trains the same student on CE alone, (c) trains a
GoldFinch of the same shape from scratch on CE. Prints, side by side on the same val windows:
KL(teacher || model), the model's val loss and the teacher's.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import _repo_path  # noqa: F401  (the repo root on sys.path)

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["model.ctx_len=128", "train.micro_batch=8", "train.val_every=0", "train.log_every=0",
          "train.save_every=0", "tracking.enabled=false", "train.warmup_steps=0"]


def train(out: Path, name: str, steps: int, *args: str) -> Path:
    cmd = [sys.executable, "-m", "pipeline.train", *COMMON, f"train.out_dir={out}",
           f"train.run_name={name}", f"train.max_steps={steps}", *args]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return out / name / "export"


def measure(model: Path, teacher: Path) -> dict:
    cmd = [sys.executable, "-m", "pipeline.evaluate", "--model", str(model), "--data",
           "data/default", "--batches", "4", "--teacher", str(teacher)]
    result = json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True,
                                       text=True).stdout)
    return {k: round(result[k], 4) for k in ("kl_teacher_student", "loss", "teacher_loss")}


def run_all(out: Path, args) -> dict[str, Path]:
    teacher = train(out, "teacher", args.teacher_steps, "--config", "configs/model/llama-tiny.yaml",
                    "train.lr=2e-3", "train.lr_final=5e-4")
    student = out / "student"
    subprocess.run([sys.executable, "-m", "model.convert", "from-transformers", str(teacher),
                    "--out", str(student), f"arch={args.arch}", "ctx_len=128"],
                   cwd=ROOT, check=True, capture_output=True)
    steps = args.align + args.kl
    shape = [f"model.{k}={'null' if v is None else v}" for k, v in
             json.loads((student / "config.json").read_text()).items() if k != "ctx_len"]
    phases = (f"freeze.phases=[{{until_step:{args.align},train:[mixers],loss:align,lr:1e-3,"
              "lr_final:1e-5},{train:[all],loss:kl,lr:1e-3,lr_final:1e-4}]")
    return {"teacher": teacher, "student (start)": student,
            "distilled (align + kl)": train(out, "distilled", steps, f"train.init_from={student}",
                                            f"distill.teacher={teacher}", phases),
            "student, CE only": train(out, "ce-only", steps, f"train.init_from={student}",
                                      "train.lr=1e-3", "train.lr_final=1e-4"),
            "scratch, CE only": train(out, "scratch", steps, *shape, "train.lr=1e-3",
                                      "train.lr_final=1e-4")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-distill"))
    parser.add_argument("--teacher-steps", type=int, default=200)
    parser.add_argument("--align", type=int, default=40)
    parser.add_argument("--kl", type=int, default=80)
    parser.add_argument("--arch", default="goldfinch")
    args = parser.parse_args()
    models = run_all(args.out.resolve(), args)
    teacher = models.pop("teacher")
    print(f"{'model':<26}{'KL(teacher||model)':>20}{'val loss':>10}{'teacher':>10}")
    for name, path in models.items():
        m = measure(path, teacher)
        print(f"{name:<26}{m['kl_teacher_student']:>20.4f}{m['loss']:>10.4f}{m['teacher_loss']:>10.4f}")


if __name__ == "__main__":
    main()
