"""Turn a comparison's numbers into docs/RESULTS.md and the val-loss plot.

Kept apart from the orchestration in compare.py so the report can be re-drawn from
`<out_dir>/<run_prefix>-results.json` (`python -m pipeline.eval.compare_report runs/compare-results.json`)
without training again.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path

from common.cli import command
from common.errors import UserError

from ..records.plots import save

CLAIMED_ORDER = ("goldfinch", "finch", "llama")  # the paper: lowest loss first
ARCH_TITLES = {"goldfinch": "GoldFinch", "finch": "Finch", "llama": "Llama", "rwkv7": "RWKV-7",
               "goldfinch7": "GoldFinch-7"}


def describe_machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()}-core CPU ({cpu}), no GPU"


def aggregate(runs: list[dict], archs: list[str]) -> list[dict]:
    """One row per arch from its runs (one per seed): means, with the spread over seeds
    (`<key>_std`, `_min`, `_max`, `_per_seed`) for the losses."""
    rows = []
    for arch in archs:
        mine = [r for r in runs if r["arch"] == arch]
        row = dict(mine[0])
        row.pop("run", None)
        row["seeds"] = [r["seed"] for r in mine]
        for key in ("val_loss", "final_train_loss"):
            values = [r[key] for r in mine]
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
            row[f"{key}_per_seed"] = values
        if len(mine) > 1:
            row["val_perplexity"] = math.exp(row["val_loss"])
            trainer = [r["trainer_val_loss"] for r in mine if r.get("trainer_val_loss") is not None]
            row["trainer_val_loss"] = statistics.fmean(trainer) if len(trainer) == len(mine) else None
            speeds = [r["tokens_per_s"] for r in mine if r.get("tokens_per_s")]
            row["tokens_per_s"] = statistics.median(speeds) if speeds else None
            row["wall_s"] = sum(r["wall_s"] for r in mine)
            row["curve"] = [(tokens, statistics.fmean(r["curve"][i][1] for r in mine))
                            for i, (tokens, _) in enumerate(mine[0]["curve"])
                            if all(len(r["curve"]) > i for r in mine)]
            row["curve_band"] = [(min(r["curve"][i][1] for r in mine), max(r["curve"][i][1] for r in mine))
                                 for i in range(len(row["curve"]))]
        rows.append(row)
    return rows


def write_plot(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    seeds = max(len(row.get("seeds", [0])) for row in rows)
    for row in rows:
        if row["curve"]:
            tokens, losses = zip(*row["curve"])
            line, = ax.plot(tokens, losses, "o-", markersize=3,
                            label=f"{row['arch']} ({row['params'] / 1e6:.1f} M)")
            if row.get("curve_band"):
                low, high = zip(*row["curve_band"])
                ax.fill_between(tokens, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    title = ("Validation loss vs tokens, same data, seed and schedule" if seeds == 1 else
             f"Validation loss vs tokens: mean and range over {seeds} seeds")
    return save(fig, ax, out, "training tokens", "val loss (nats/token)", title)


def ordering(rows: list[dict]) -> tuple[bool, str]:
    """(did the claimed order hold among the archs present, the measured order as text)."""
    by_loss = sorted(rows, key=lambda r: r["val_loss"])
    measured = " < ".join(f"{r['arch']} {r['val_loss']:.4f}" for r in by_loss)
    loss = {r["arch"]: r["val_loss"] for r in rows}
    claimed = [arch for arch in CLAIMED_ORDER if arch in loss]
    held = all(loss[a] <= loss[b] for a, b in zip(claimed, claimed[1:]))
    return held, measured


def beyond_spread(a: dict, b: dict) -> bool:
    """Whether every seed separates a and b the same way: their ranges over seeds do not overlap."""
    return a["val_loss_max"] < b["val_loss_min"] or b["val_loss_max"] < a["val_loss_min"]


def gap_notes(rows: list[dict], close: float = 0.05) -> list[str]:
    """Sentences on how far apart neighbouring archs (in the claimed order) are: against the
    spread over seeds when there are several, else against the trainer's own last validation."""
    by_arch = {r["arch"]: r for r in rows}
    loss = {r["arch"]: r["val_loss"] for r in rows}
    trainer = {r["arch"]: r.get("trainer_val_loss") for r in rows}
    claimed = [arch for arch in CLAIMED_ORDER if arch in loss]
    notes = []
    for a, b in zip(claimed, claimed[1:]):
        gap = loss[b] - loss[a]
        line = f"{b} - {a} = {gap:+.4f} nats"
        if len(by_arch[a].get("seeds", [0])) > 1:
            ra, rb = by_arch[a], by_arch[b]
            where = ("exceeds the spread: every seed ranks them the same way" if beyond_spread(ra, rb)
                     else "within the spread: the seeds' ranges overlap")
            notes.append(f"{line}, {where} ({a} {ra['val_loss_min']:.4f}-{ra['val_loss_max']:.4f}, "
                         f"{b} {rb['val_loss_min']:.4f}-{rb['val_loss_max']:.4f})")
            continue
        if abs(gap) < close:
            line += (f" (under {close} nats: too close to call from one seed at this scale")
            if trainer[a] is not None and trainer[b] is not None:
                agree = (trainer[a] <= trainer[b]) == (gap >= 0)
                line += (f"; the trainer's last validation, on fewer windows, gives {a} "
                         f"{trainer[a]:.4f} vs {b} {trainer[b]:.4f}, "
                         + ("the same order" if agree else "the opposite order"))
            line += ")"
        notes.append(line)
    return notes


def _fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def _with_spread(r: dict, key: str) -> str:
    if len(r.get("seeds", [0])) == 1:
        return f"{r[key]:.4f}"
    return f"{r[key]:.4f} ± {r[key + '_std']:.4f}"


def table(rows: list[dict], cache_context: int) -> list[str]:
    several = len(rows[0].get("seeds", [0])) > 1
    spread = " (mean ± std)" if several else ""
    lines = [f"| arch | params | tokens | final train loss{spread} | val loss{spread} | val ppl | "
             f"tokens/s | cache bytes/token @{cache_context} | fixed state bytes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['params']:,} | {r['tokens']:,} | "
                     f"{_with_spread(r, 'final_train_loss')} | "
                     f"{_with_spread(r, 'val_loss')} | {r['val_perplexity']:.2f} | "
                     f"{_fmt(r['tokens_per_s'], ',.0f')} | {r['cache_bytes_per_token']:,.1f} | "
                     f"{r['fixed_state_bytes']:,} |")
    return lines


def setup_lines(summary: dict) -> list[str]:
    cfg, rows, data = summary["config"], summary["rows"], summary.get("data", {})
    train = summary.get("train", {})
    splits = data.get("splits", {})
    source = data.get("input", {}).get("resolved", "a synthetic or externally built corpus")
    if source.endswith("(the Python standard library)"):  # not this host's install path
        source = "the `*.py` files of the Python standard library"
    vocab = data.get("tokenizer", {}).get("vocab_size", train.get("vocab_size"))
    kind = {"rwkv-world": "RWKV World (rwkv_vocab_v20230424)"}.get(data.get("tokenizer", {}).get("kind"),
                                                                  "Byte-level BPE")
    lines = [f"- **Data**: `{cfg['data']}`, built from {source}."]
    if splits:
        tr, va = splits.get("train", {}), splits.get("val", {})
        lines[-1] += (f" Train split {tr.get('tokens', 0):,} tokens in {tr.get('documents', 0):,} "
                      f"documents; val split {va.get('tokens', 0):,} tokens in "
                      f"{va.get('documents', 0):,} documents.")
    if vocab:
        lines[-1] += f" {kind} tokenizer, vocabulary {vocab:,}."
    shape = train.get("shape", "")
    lines += [
        f"- **Models**: `{cfg['preset']}` for each arch{shape}; parameter counts "
        + ", ".join(f"{r['arch']} {r['params']:,}" for r in rows)
        + f" (largest/smallest - 1 = {summary['param_spread']:.1%}, limit {cfg['param_tolerance']:.0%}).",
        f"- **Training**: each arch by its own `python -m pipeline.train` process: {cfg['steps']} "
        f"optimizer steps x {cfg['micro_batch']} windows x {cfg['ctx_len']} tokens = "
        f"{rows[0]['tokens']:,} tokens, the same windows in the same order for every arch ("
        + (f"seed {cfg['seed']}); " if len(rows[0].get("seeds", [0])) == 1 else
           f"once per seed: {', '.join(map(str, rows[0]['seeds']))}; the table gives the mean and "
           "standard deviation over seeds, per-seed numbers are in the results JSON); ")
        + (f"AdamW, lr {train['lr']:g} -> {train['lr_final']:g} ({train['lr_schedule']}, "
           f"{train['warmup_steps']} warm-up steps), {train['precision']}, ZeRO stage "
           f"{train['zero_stage']}, {cfg['nproc']} process(es); " if train else "")
        + f"MLflow experiment `{cfg['experiment']}`, runs `{cfg['run_prefix']}-<arch>"
        + ("`." if len(rows[0].get("seeds", [0])) == 1 else "-s<seed>`."),
        f"- **Val loss** (table): `pipeline.evaluate` over the first {cfg['eval_batches']} global "
        f"batches of windows of the val split ({rows[0]['val_tokens']:,} tokens, unshuffled, "
        f"identical for every arch). The curves are the trainer's own validation (the first "
        f"{cfg['val_batches']} global batches) during training.",
        f"- **Final train loss**: mean over the last {rows[0]['train_loss_steps']} steps. "
        f"**tokens/s**: median training throughput per step (excluding validation and the first step); "
        f"it depends on whatever else the machine was running, so compare it loosely.",
        f"- **Cache**: each trained model pre-fills {cfg['cache_context']:,} val tokens through the "
        f"linear path (`last_only=True`); bytes/token = `state.cache_bytes() / {cfg['cache_context']}` "
        f"with a bf16 cache and int32 token ids. Finch keeps no per-token cache (growth 0); its "
        f"constant recurrent state (fp32 WKV matrices and token-shift vectors) is the last column.",
    ]
    return lines


def results_markdown(summary: dict, plot: Path, results: Path) -> str:
    cfg, rows = summary["config"], summary["rows"]
    held, measured = ordering(rows)
    date = cfg["date"] or datetime.date.today().isoformat()
    machine = cfg["machine"] or describe_machine()
    plot_link = os.path.relpath(plot.resolve(), results.resolve().parent)
    notes = gap_notes(rows)
    verdict = "**The paper's ordering did not hold here**"
    if held:
        verdict = ("**The paper's ordering held here, but only nominally**: some neighbours are "
                   "within noise of each other" if any("too close" in n for n in notes)
                   else "**The paper's ordering held here**")
    walls = ", ".join(f"{r['arch']} training {r['wall_s'] / 60:.1f} min" for r in rows)
    n_seeds = len(rows[0].get("seeds", [0]))
    if n_seeds > 1:
        verdict = "**The paper's ordering did not hold here**"
        if held:
            verdict = ("**The paper's ordering held here in the means, but not beyond the spread "
                       "over seeds for every pair**" if any("within the spread" in n for n in notes)
                       else "**The paper's ordering held here, every gap beyond the spread over seeds**")
        scale = (f"This is {n_seeds} seeds and {rows[0]['tokens']:,} training tokens per model, orders of "
                 "magnitude below the paper's runs: a gap within the spread over seeds is not a "
                 "ranking. Scale it up with `COMPARE_STEPS=<n>` and larger `micro_batch=` / `ctx_len=` "
                 "on a GPU.")
    else:
        scale = (f"This is one seed and {rows[0]['tokens']:,} training tokens per model, orders of "
                 "magnitude below the paper's runs; the run-to-run spread from seeds was not measured "
                 "(`seeds=3` measures it), so gaps of a few hundredths of a nat should not be read as "
                 "a ranking. Scale it up with `COMPARE_STEPS=<n>` and larger `micro_batch=` / "
                 "`ctx_len=` on a GPU.")
    text = [
        "# Results: " + " vs ".join(ARCH_TITLES.get(r["arch"], r["arch"]) for r in rows)
        + " at equal size, data and tokens",
        "",
        f"Measured {date} on {machine} by `make compare` (`python -m pipeline.compare`); "
        f"the whole comparison took {summary['wall_s'] / 60:.1f} minutes "
        f"({walls}).",
        "",
        "## Setup",
        "",
        *setup_lines(summary),
        "",
        "## Numbers",
        "",
        *table(rows, cfg["cache_context"]),
        "",
        f"![val loss vs tokens]({plot_link})",
        "",
        "## Did the ordering hold?",
        "",
        f"The paper (arXiv 2407.12077) reports GoldFinch <= Finch <= Llama in loss at equal size and "
        f"tokens. Measured val loss, lowest first: {measured}. {verdict} "
        f"(among the archs compared: {', '.join(r['arch'] for r in rows)}). "
        f"Gaps: {'; '.join(notes)}.",
        "",
        scale,
        "",
        "## Reproduce",
        "",
        "```bash",
        reproduce_command(summary.get("command")) + "   # this table",
        "COMPARE_STEPS=2000 make compare ARGS=\"micro_batch=32 ctx_len=512\"",
        "python -m pipeline.eval.compare_report " + f"{cfg['out_dir']}/{cfg['run_prefix']}-results.json"
        + "   # redraw from the saved numbers",
        "```",
        "",
    ]
    return "\n".join(text)


def reproduce_command(command: dict | None) -> str:
    """The `make compare` line that gives the table, with the arguments the run was given."""
    command = command or {}
    args = ([f"--config {command['config']}"] if command.get("config") else []) + list(command.get("overrides") or [])
    line = (f"COMPARE_STEPS={command['steps_env']} " if command.get("steps_env") else "") + "make compare"
    return line + (f' ARGS="{" ".join(args)}"' if args else "")


def write_results(summary: dict, results: Path, plot: Path) -> Path:
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(results_markdown(summary, plot, results))
    return results


@command("pipeline.eval.compare_report")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise UserError("usage: python -m pipeline.eval.compare_report RESULTS.json")
    try:
        summary = json.loads(Path(argv[0]).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {argv[0]}: {err}") from None
    cfg = summary["config"]
    write_plot(summary["rows"], Path(cfg["plot"]))
    write_results(summary, Path(cfg["results"]), Path(cfg["plot"]))
    print(f"pipeline.eval.compare_report: wrote {cfg['results']} and {cfg['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
