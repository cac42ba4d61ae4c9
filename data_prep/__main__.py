"""`python -m data_prep [--config FILE] data.key=value ...`: build a data dir.

User errors (config, input, output dir) print one `data_prep: ...` line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import sys

from common.cli import command


@command("data_prep")
def main(argv: list[str] | None = None) -> int:
    from dataclasses import fields

    from .config import DataConfig

    keys = "\n".join(f"  data.{f.name}={getattr(DataConfig(), f.name)}" for f in fields(DataConfig))
    parser = argparse.ArgumentParser(
        prog="python -m data_prep", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Tokenize a text corpus (in this process or with Ray) and shard it into WebDataset tars.",
        epilog=f"config keys and defaults:\n{keys}\n\ndata.executor=auto: this process below "
               "data.auto_local_bytes of input, Ray above it.\nRAY_ADDRESS=host:port joins a Ray cluster "
               "(auto then always uses Ray).")
    parser.add_argument("--config", help="YAML file with a `data:` section")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist, e.g. data.vocab_size=4096")
    args = parser.parse_args(argv)
    try:
        from .config import load_config
        from .job import run

        run(load_config(args.config, args.overrides))
    except KeyboardInterrupt:
        print("data_prep: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
