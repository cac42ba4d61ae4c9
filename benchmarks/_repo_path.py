"""Imported first by every benchmark script. Run as `python benchmarks/X.py`, this folder comes
first on sys.path, and `benchmarks/kernels.py` / `benchmarks/data_prep.py` would hide the packages
of the same name; look packages up from the repository root (and tests/ for its helpers) instead."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT), str(ROOT / "tests")] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
