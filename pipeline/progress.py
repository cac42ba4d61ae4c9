"""Console progress: a tqdm bar (step, loss, tokens/s) plus a plain log line now and then."""
from __future__ import annotations


class Progress:
    def __init__(self, total: int, start: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, record: dict, log: bool) -> None:
        if self.bar is None:
            return
        self.bar.update(record["step"] - self.bar.n)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        if log:
            parts = [f"step {record['step']}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}",
                     f"grad_norm {record['grad_norm']:.3f}", f"tok/s {record['tokens_per_s']:.0f}"]
            if record.get("mfu") is not None:
                parts.append(f"mfu {100 * record['mfu']:.1f}%")
            if "val_loss" in record:
                parts.append(f"val_loss {record['val_loss']:.4f}")
            self.bar.write(" | ".join(parts))

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
