"""Console progress: a tqdm bar (step, loss, tokens/s) on a terminal, plus a plain log line every
train.log_every steps (the only output when stderr is a file, e.g. a Slurm log)."""
from __future__ import annotations


class Progress:
    def __init__(self, total: int, start: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            # disable=None: no bar when stderr is not a terminal, so logs hold lines, not redraws
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, disable=None)

    def update(self, record: dict, log: bool) -> None:
        if self.bar is None:
            return
        self.bar.update(record["step"] - self.bar.n)
        self.bar.set_postfix(loss=_num(record["loss"], ".4f"), tok_s=_num(record["tokens_per_s"], ".0f"))
        if log:
            parts = [f"step {record['step']}", f"loss {_num(record['loss'], '.4f')}",
                     f"lr {record['lr']:.2e}", f"grad_norm {_num(record['grad_norm'], '.3f')}",
                     f"tok/s {record['tokens_per_s']:.0f}"]
            if record.get("mfu") is not None:
                parts.append(f"mfu {100 * record['mfu']:.1f}%")
            if record.get("skipped_steps"):
                parts.append(f"skipped {record['skipped_steps']}")
            if "val_loss" in record:
                parts.append(f"val_loss {_num(record['val_loss'], '.4f')}")
            self.write(" | ".join(parts))

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
