"""Export a training checkpoint (any ZeRO stage) as `model.safetensors` + `config.json`.

    python -m pipeline.export --run runs/<name> [--step N] --out DIR [--unmerged]

A Bone/Bat fine-tuning run (peft.method) is merged into plain weights of the base architecture;
`--unmerged` keeps its blocks apart (load_exported wraps the Linears they belong to).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import command

from .inference.exporting import export


@command("pipeline.export")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="run directory (runs/<name>)")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--unmerged", action="store_true",
                        help="keep Bone/Bat blocks apart from the weights they update")
    args = parser.parse_args(argv)
    out = export(args.run, args.out, args.step, args.unmerged)
    print(f"exported {args.run} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
