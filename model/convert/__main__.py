"""Convert checkpoints of the paper's reference implementation; build students from transformers.

    python -m model.convert import SRC.pth --out DIR [key=value ...]
    python -m model.convert export DIR --out DST.pth
    python -m model.convert from-transformers TEACHER --out DIR [--rope] [key=value ...]

`import` infers the architecture and sizes from the state dict's names and shapes; key=value
(model keys, e.g. ctx_len=4096, cache_dtype=float32, head_size=64 for a Llama) sets what the
weights cannot say. `export` writes the reference's names and layout, loadable there strictly.
`from-transformers` builds a student for distillation from a local Hugging Face Llama/Qwen2 dir
(or an exported Llama of ours): the teacher's embeddings, norms, MLPs and head are copied, its
q/k/v/o become each layer's r/k/v/o (GOLD: query/output); key=value picks the student (arch=
goldfinch by default, finch or rwkv7 for an all-recurrent one, lower=...); --rope keeps the
teacher's RoPE on r and k.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import command

from . import export_reference, from_transformers, import_reference

TAKES_OVERRIDES = ("import", "from-transformers")


def _summary(teacher: str, out: str, cfg, rope: bool) -> str:
    lower = f", lower={cfg.lower_mixer}" if cfg.arch != "llama" else ""
    tok = ("tokenizer.json copied" if (Path(out) / "tokenizer.json").is_file() else
           "the teacher has no tokenizer.json: pass data.tokenizer=<its tokenizer> yourself")
    return (f"student {teacher} -> {out}: arch={cfg.arch}{lower}, n_layer={cfg.n_layer}, "
            f"n_embd={cfg.n_embd}, heads={cfg.n_head}x{cfg.head_size}, vocab_size={cfg.vocab_size}, "
            f"gold blocks={cfg.n_gold}, att_bias={cfg.att_bias}, "
            f"rope on r/k={cfg.rk_rope_theta if rope else 'off'}, ctx_len={cfg.ctx_len}; {tok}; "
            f"teacher recorded in teacher.json")


@command("model.convert")
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
    hf = sub.add_parser("from-transformers", help="transformer teacher dir -> student model dir")
    hf.add_argument("teacher")
    hf.add_argument("--out", required=True)
    hf.add_argument("--rope", action="store_true", help="RoPE on r and k at the teacher's base")
    hf.epilog = "key=value: the student's model keys (arch, lower, ctx_len, ...)"
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") or "=" not in o
           or args.command not in TAKES_OVERRIDES]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (import and from-transformers take "
                     "model key=value overrides after the source)")
    if args.command == "import":
        cfg = import_reference(args.src, args.out, overrides)
        lower = f", lower={cfg.lower_mixer}" if cfg.arch != "llama" else ""
        print(f"imported {args.src} -> {args.out}: arch={cfg.arch}{lower}, n_layer={cfg.n_layer}, "
              f"n_embd={cfg.n_embd}, vocab_size={cfg.vocab_size}, head_size={cfg.head_size}, "
              f"gold blocks={cfg.n_gold}, ctx_len={cfg.ctx_len}")
    elif args.command == "from-transformers":
        cfg = from_transformers(args.teacher, args.out, overrides, rope=args.rope)
        print(_summary(args.teacher, args.out, cfg, args.rope))
    else:
        ref = export_reference(args.model_dir, args.out)
        print(f"exported {args.model_dir} -> {args.out}: {len(ref)} tensors in the reference layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
