"""Guard an output dir between runs: resume one made with the same config, refuse a different one.

The first run writes `.state/run.json` (the config that decides the output, and a digest of the
input) before anything else; later runs compare against it, so a config, input or tokenizer
change is refused with a message naming what differs, unless `data.overwrite=true`.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from . import atomic
from .errors import UserError
from .writer import STATE_DIR

RUN_RECORD = "run.json"
SHARD_NAME = re.compile(r"^(train|val)-\d{6}\.tar$")
OWN_FILES = ("tokenizer.json", "rwkv_vocab_v20230424.txt", "manifest.json")
HINT = "pass data.overwrite=true to rebuild it, or choose another data.output"


def _ours(p: Path) -> bool:
    return p.name in OWN_FILES or p.name == STATE_DIR or bool(SHARD_NAME.match(p.name)) or (
        p.name.startswith(".") and p.name.endswith(atomic.PARTIAL_SUFFIX))


def clear(out: Path) -> None:
    """Remove what data_prep writes (and nothing else) from out."""
    for p in out.iterdir():
        if _ours(p):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _show(value) -> str:
    return json.dumps(value)


def open_output(out: Path, config: dict, overwrite: bool) -> dict | None:
    """Make out ready; returns the run record of an earlier run with the same config, if any."""
    if out.exists() and not out.is_dir():
        raise UserError(f"data.output={str(out)!r} is a file, not a directory")
    if out.is_dir() and overwrite:
        clear(out)
    out.mkdir(parents=True, exist_ok=True)
    record_file = out / STATE_DIR / RUN_RECORD
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        old = record.get("config", {})
        diffs = [f"data.{k}: {_show(old.get(k))} there, {_show(v)} now"
                 for k, v in config.items() if old.get(k) != v]
        diffs += [f"data.{k}: {_show(v)} there, unknown now" for k, v in old.items() if k not in config]
        if diffs:
            raise UserError(f"{out} was built with another config ({'; '.join(diffs)}); {HINT}")
        atomic.remove_partials(out)
        atomic.remove_partials(out / STATE_DIR)
        return record
    atomic.remove_partials(out / STATE_DIR)
    leftovers = sorted(p.name for p in out.iterdir() if p.name != STATE_DIR
                       and not p.name.endswith(atomic.PARTIAL_SUFFIX))
    if leftovers and not overwrite:
        listed = ", ".join(leftovers[:5]) + (" ..." if len(leftovers) > 5 else "")
        raise UserError(f"{out} is not empty and was not made by data_prep ({listed}); {HINT}")
    return None


def check_input(out: Path, record: dict | None, input_digest: str) -> None:
    if record is not None and record.get("input_digest") != input_digest:
        raise UserError(f"the input changed since {out} was started (the documents or their order "
                        f"differ); {HINT}")


def write_run_record(out: Path, config: dict, input_digest: str) -> None:
    (out / STATE_DIR).mkdir(exist_ok=True)
    body = {"config": config, "input_digest": input_digest}
    atomic.write_bytes(out / STATE_DIR / RUN_RECORD, json.dumps(body, indent=1).encode())


def check_tokenizer(out: Path, given_sha: str, given_path: str) -> None:
    """A given tokenizer must be the one an existing output was built with."""
    from .text_codec import FILES
    from .tokenizer import sha256_hex

    for name in FILES.values():
        existing = out / name
        if not existing.is_file():
            continue
        have = sha256_hex(existing.read_bytes())
        if have != given_sha:
            raise UserError(f"data.tokenizer={given_path!r} differs from the tokenizer {out} was built "
                            f"with (sha256 {given_sha[:12]} vs {have[:12]}); {HINT}")


def remove_stale_shards(out: Path, planned: set[str]) -> None:
    """Shards of this name pattern that the plan does not list (never reachable otherwise)."""
    for p in out.iterdir():
        if SHARD_NAME.match(p.name) and p.name not in planned:
            p.unlink()
            (out / STATE_DIR / f"{p.name}.done.json").unlink(missing_ok=True)
