"""Convert checkpoints of the paper's reference implementation in and out.

    python -m model.convert import SRC.pth --out DIR [key=value ...]
    python -m model.convert export DIR --out DST.pth

`import` infers the architecture and sizes from the state dict's names and shapes; key=value
(model keys, e.g. ctx_len=4096, cache_dtype=float32, head_size=64 for a Llama) sets what the
weights cannot say. `export` writes the reference's names and layout, loadable there strictly.
"""
from __future__ import annotations

import argparse
import sys

from . import ConvertError, export_reference, import_reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.convert",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="reference .pth -> exported model dir")
    imp.add_argument("src")
    imp.add_argument("--out", required=True)
    imp.epilog = "key=value: model keys the weights cannot say (ctx_len, cache_dtype, ...)"
    exp = sub.add_parser("export", help="exported model dir -> reference .pth")
    exp.add_argument("model_dir")
    exp.add_argument("--out", required=True)
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") or "=" not in o or args.command != "import"]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (import takes model key=value "
                     "overrides after the source)")
    try:
        if args.command == "import":
            cfg = import_reference(args.src, args.out, overrides)
            lower = f", lower={cfg.lower_mixer}" if cfg.arch != "llama" else ""
            print(f"imported {args.src} -> {args.out}: arch={cfg.arch}{lower}, n_layer={cfg.n_layer}, "
                  f"n_embd={cfg.n_embd}, vocab_size={cfg.vocab_size}, head_size={cfg.head_size}, "
                  f"gold blocks={cfg.n_gold}, ctx_len={cfg.ctx_len}")
        else:
            ref = export_reference(args.model_dir, args.out)
            print(f"exported {args.model_dir} -> {args.out}: {len(ref)} tensors in the reference layout")
    except (ConvertError, ValueError, FileNotFoundError) as err:
        print(f"model.convert: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
