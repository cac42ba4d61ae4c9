"""Does this `make train` / `make compare` read the default data dir?

    python -m pipeline.data.default_needed train [--config FILE] [key=value ...]   -> yes | no
    python -m pipeline.data.default_needed compare [--config FILE] [key=value ...]

The Makefile builds data/default only when the run reads it, so `make train ARGS="data.path=X"`
never spends minutes tokenizing a corpus it will not use. The config is resolved exactly as the
trainer (or pipeline.compare) resolves it; a bad config exits 2 with the trainer's one-line error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import report
from common.errors import UserError

from pipeline.config import DEFAULT_DATA_PATH


def is_default(path: str) -> bool:
    """The same local dir as data/default (relative to the repo root, where make runs)."""
    if not path or "://" in path:
        return False
    return Path(path).resolve() == Path(DEFAULT_DATA_PATH).resolve()


def train_paths(config: list[str] | None, overrides: list[str]) -> list[str]:
    """The data dirs a training run reads: every data.mix source, else data.path."""
    from pipeline.config import load_run_config

    data = load_run_config(config, overrides).data
    return [m.path for m in data.mix] or [data.path]


def compare_paths(config: list[str] | None, overrides: list[str]) -> list[str]:
    """pipeline.compare opens its `data` dir itself, whatever train_overrides say."""
    from pipeline.compare import load_config

    if config and len(config) > 1:
        raise UserError(f"make compare takes one --config, got {len(config)}: {', '.join(config)}")
    return [load_config(config[0] if config else None, overrides).data]


def needed(command: str, config: list[str] | None, overrides: list[str]) -> bool:
    paths = (train_paths if command == "train" else compare_paths)(config, overrides)
    return any(is_default(p) for p in paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.data.default_needed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("train", "compare"))
    parser.add_argument("--config", action="append",
                        help="the YAML the command gets (make's CONFIG, and any in its ARGS)")
    parser.add_argument("overrides", nargs="*", help="the command's key=value overrides (make's ARGS)")
    args = parser.parse_intermixed_args(argv)
    return report(f"make {args.command}", lambda: print(
        "yes" if needed(args.command, args.config, args.overrides) else "no"))


if __name__ == "__main__":
    sys.exit(main())
