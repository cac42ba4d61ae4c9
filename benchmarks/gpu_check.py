"""One-shot GPU check: tests, WKV6 correctness and speed, WKV7 speed, fused-CE memory, a short
L24-D2048 run.

    python benchmarks/gpu_check.py --out DIR [--parts tests,wkv6_speed] [--dry-run] [--smoke]

Every part runs in its own process under its own time limit (all within --budget-s, default 470 s),
so a hang or a crash costs only that part. Results go to DIR/gpu_check.jsonl (one JSON object per
line: an `env` line, the measurements, and one `status` line per part: ok, fail, skipped with the
missing package named, or timeout), a log per part (DIR/<part>.log) and DIR/summary.txt.
Needs only torch and Triton (CUDA builds); pytest for `tests`; DeepSpeed, omegaconf and
webdataset for `train_l24`; flash-linear-attention (`fla`) for `wkv6_fla` (and, optionally, the
fla row of `wkv7`). Nothing is installed.
--dry-run prints the plan (limits, what would be skipped) without running anything; --smoke runs
the parts at toy sizes, also on CPU (Triton interpreted), which is how CI checks this script.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import _repo_path  # noqa: F401  (the repository's packages first, not benchmarks/kernels.py)

sys.path.append(str(Path(__file__).resolve().parent))  # after the packages: for gpu_check_parts
from gpu_check_parts import TAG, run_child  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# name: (time limit in seconds, packages it needs, what it measures)
PARTS = {
    "compile": (60, ("triton",), "compile the WKV6 variants below in parallel (warms Triton's cache)"),
    "tests": (80, ("pytest", "triton"), "the gpu-marked tests"),
    "wkv6_correct": (40, ("triton",), "Triton WKV6 fwd+bwd vs the torch chunked path in fp64, "
                                      "bf16/fp32, K=64/128, T=1000"),
    "wkv6_speed": (50, ("triton",), "WKV6 fwd+bwd B=8 T=4096 H=32 K=V=64 bf16: Triton vs torch "
                                    "chunked, u=0 and u!=0"),
    "wkv7": (60, ("triton",), "WKV7 fwd+bwd B=8 T=4096 H=32 K=64 bf16: Triton vs torch chunked "
                             "(and fla chunk_rwkv7, scale 1, where fla imports)"),
    "fused_ce": (30, ("triton",), "fused linear+CE vs plain: peak memory at vocab 65,536"),
    "train_l24": (180, ("deepspeed", "omegaconf", "webdataset"),
                  "20 steps of L24-D2048 ctx 4096 bf16 ZeRO-1: tokens/s and MFU"),
    "train_l24_gf7": (180, ("deepspeed", "omegaconf", "webdataset"),
                      "the same for GoldFinch-7 (RWKV-7 below GOLD, Triton WKV7): tokens/s and MFU"),
    # last, and free to use whatever the budget has left: fla autotunes for minutes at first call
    "wkv6_fla": (300, ("fla",), "flash-linear-attention chunk_rwkv6 at the wkv6_speed size "
                                "(autotuned first, timed last)"),
}
SMOKE_PARTS = ("wkv6_correct", "wkv6_speed", "wkv7", "fused_ce", "train_l24", "train_l24_gf7")
TARGETS = {"triton_vs_fla_u0": 1.0, "triton_vs_torch": 20.0, "train_mfu": 0.40}
# the test files holding gpu-marked tests (the rest of the suite needs the full training stack)
GPU_TEST_FILES = ("tests/test_wkv6_triton.py", "tests/test_wkv6_triton_dispatch.py",
                  "tests/test_wkv7_triton.py", "tests/test_fused_ce.py")


def missing_packages(needs) -> list[str]:
    return [name for name in needs if importlib.util.find_spec(name) is None]



def env_record() -> dict:
    import torch
    rec = {"record": "env", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "device": "cpu"}
    if torch.cuda.is_available():
        rec["device"] = torch.cuda.get_device_name()
    for name, dist in (("triton", "triton"), ("deepspeed", "deepspeed"),
                       ("fla", "flash-linear-attention"), ("pytest", "pytest")):
        try:
            rec[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            rec[name] = None
    return rec


class Results:
    """gpu_check.jsonl, written line by line so that whatever ran is kept if this process dies."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.rows = out, []
        self.fh = open(out / "gpu_check.jsonl", "w")

    def add(self, **row) -> None:
        self.rows.append(row)
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()


def run_part(part: str, limit: float, args, results: Results) -> None:
    """One part in a child process under `limit` seconds; its JSON lines go to the results."""
    if part == "tests":
        cmd = tests_command(args.out)
    else:
        cmd = [sys.executable, __file__, "--child", part, "--out", str(args.out)]
        cmd += ["--smoke"] if args.smoke else []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.smoke and not cuda_available():
        env.setdefault("TRITON_INTERPRET", "1")
    log = args.out / f"{part}.log"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        output, rc, status = proc.stdout + proc.stderr, proc.returncode, None
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode() + (err.stderr or b"").decode() \
            if isinstance(err.stdout, bytes) else (err.stdout or "") + (err.stderr or "")
        rc, status = None, "timeout"
    log.write_text(output)
    seconds = round(time.perf_counter() - t0, 1)
    skipped = None
    for line in output.splitlines():
        if line.startswith(TAG):
            row = json.loads(line[len(TAG):])
            if row.get("status") == "skipped":
                skipped = row["reason"]
            else:
                results.add(part=part, **row)
    if part == "tests" and status is None:
        rc = tests_results(args.out, results)
    if status is None:
        status = "skipped" if skipped else ("ok" if rc == 0 else "fail")
    last = [line for line in output.strip().splitlines() if not line.startswith(TAG)][-1:]
    results.add(part=part, status=status, seconds=seconds, limit_s=round(limit),
                **({"reason": skipped} if skipped else {}),
                **({"error": last[0][-300:]} if status == "fail" and last else {}))


def tests_command(out: Path) -> list[str]:
    opts = ["-o", "addopts=-ra"] if importlib.util.find_spec("pytest_timeout") is None else []
    return [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *opts,
            f"--junitxml={out / 'tests.xml'}", *GPU_TEST_FILES]


def tests_results(out: Path, results: Results) -> int:
    """Counts and failing test names from pytest's JUnit XML; 0 when nothing failed."""
    import xml.etree.ElementTree as ET
    xml = out / "tests.xml"
    if not xml.is_file():
        return 1
    cases = list(ET.parse(xml).getroot().iter("testcase"))
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in cases
              if c.find("failure") is not None or c.find("error") is not None]
    skipped = sum(c.find("skipped") is not None for c in cases)
    results.add(part="tests", passed=len(cases) - len(failed) - skipped, failed=failed,
                skipped=skipped)
    return 1 if failed or not cases else 0


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def summarize(rows: list[dict], judge: bool = True) -> list[str]:
    """Readable lines: per-part status, the headline numbers and (judge) the targets."""
    lines = []
    env = next((r for r in rows if r.get("record") == "env"), {})
    lines.append(f"gpu_check {env.get('date')} on {env.get('device')}: torch {env.get('torch')}, "
                 f"triton {env.get('triton')}, python {env.get('python')}")
    for r in rows:
        if "status" in r:
            why = r.get("reason") or r.get("error") or ""
            lines.append(f"  {r['part']:<13} {r['status']:<8} {r.get('seconds', '-'):>6} s"
                         f"  {why}".rstrip())
    speed = {(r["impl"], r["u"]): r["ms"] for r in rows if "impl" in r}
    for u in (False, True):
        tri = speed.get(("triton", u))
        for other in ("torch chunked", "fla chunk_rwkv6"):
            if tri and speed.get((other, u)):
                ratio = speed[(other, u)] / tri
                target = TARGETS["triton_vs_fla_u0"] if "fla" in other and not u else \
                    TARGETS["triton_vs_torch"] if "torch" in other else None
                verdict = "" if target is None or not judge else (" (target >= %.0fx: %s)" % (
                    target, "met" if ratio >= target else "NOT met"))
                lines.append(f"  WKV6 u={'yes' if u else 'no'}: Triton {tri:.2f} ms, {other} "
                             f"{speed[(other, u)]:.2f} ms: Triton {ratio:.2f}x faster{verdict}")
    lines += _wkv7_lines(rows)
    ce = {r["kind"]: r for r in rows if r.get("part") == "fused_ce" and "kind" in r}
    if len(ce) == 2 and ce["plain"].get("peak_bytes"):
        lines.append(f"  fused CE peak {ce['fused']['peak_bytes'] / 2**30:.2f} GiB vs plain "
                     f"{ce['plain']['peak_bytes'] / 2**30:.2f} GiB")
    names = {"train_l24": "L24-D2048", "train_l24_gf7": "GoldFinch-7 L24-D2048"}
    for r in rows:
        if r.get("part") in names and "steps" in r:
            mfu = r.get("mfu")
            verdict = "" if mfu is None or not judge else (
                f" (target >= 40%: {'met' if mfu >= TARGETS['train_mfu'] else 'NOT met'})")
            lines.append(f"  {names[r['part']]}: {r['tokens_per_s'] or 0:.0f} tokens/s, MFU "
                         + ("unknown" if mfu is None else f"{mfu:.1%}") + verdict)
    return lines


def _wkv7_lines(rows: list[dict]) -> list[str]:
    ms = {r["wkv7_impl"]: r["ms"] for r in rows if "wkv7_impl" in r}
    tri, lines = ms.get("triton"), []
    for other in ("torch chunked", "fla chunk_rwkv7"):
        if tri and ms.get(other):
            lines.append(f"  WKV7: Triton {tri:.2f} ms, {other} {ms[other]:.2f} ms: Triton "
                         f"{ms[other] / tri:.2f}x faster")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of: {', '.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=470, help="time for all parts together")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--smoke", action="store_true", help="toy sizes; runs on CPU too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, args.out, args.smoke)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; expected some of {', '.join(PARTS)}")
    if args.smoke:
        parts = [p for p in parts if p in SMOKE_PARTS]
    if not (args.dry_run or args.smoke or cuda_available()):
        parser.error("no CUDA device here: use --dry-run (the plan) or --smoke (toy sizes on CPU)")
    results = Results(args.out)
    results.add(**env_record())
    deadline = time.monotonic() + args.budget_s
    for part in parts:
        limit, needs, what = PARTS[part]
        missing = missing_packages(needs)
        left = deadline - time.monotonic()
        if missing:
            results.add(part=part, status="skipped", reason=f"missing package: {', '.join(missing)}")
        elif args.dry_run:
            results.add(part=part, status="planned", limit_s=limit, what=what)
        elif left < 5:
            results.add(part=part, status="skipped", reason="out of time (--budget-s)")
        else:
            print(f"gpu_check: {part} (up to {min(limit, left):.0f} s): {what}", flush=True)
            run_part(part, min(limit, left), args, results)
    lines = summarize(results.rows, judge=not args.smoke)
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(r.get("status") in ("fail", "timeout") for r in results.rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
