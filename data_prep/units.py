"""Work units: the pieces of input one task reads, decided from file names and sizes alone.

A unit is a run of consecutive pieces of about `unit_bytes` source bytes: small files are packed
together, a large JSONL file is cut into byte ranges (a range owns the lines that start inside it,
so a cut never splits a document or a UTF-8 sequence), a Parquet file into row-group ranges, a
binidx corpus into byte ranges of its `.bin` (a range owns the documents that start inside it;
the task finds them in the index). `.jsonl.gz` and text files are read whole. Units, like shards,
depend only on the input and the config, never on the number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass

from .sources import BINIDX, JSONL, PARQUET, Corpus, SourceFile

MIN_AUTO_UNIT = 1 << 20
AUTO_UNITS = 32  # small inputs are cut into about this many units, so every CPU has work


@dataclass(frozen=True)
class Piece:
    file: SourceFile
    start: int  # jsonl/binidx: byte offset; parquet: first row group; else 0
    end: int  # jsonl/binidx: end byte (exclusive; the last piece of a binidx owns its tail); parquet: group
    first_row: int = 0  # parquet: rows before `start` in the file
    nbytes: int = 0  # source bytes it covers (for sizing units and the tokenizer sample)


@dataclass(frozen=True)
class Unit:
    index: int
    pieces: tuple[Piece, ...]

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.pieces)


def unit_size(corpus: Corpus, unit_bytes: int) -> int:
    """`data.unit_bytes`, made smaller for small inputs (from the input size alone)."""
    return max(1, min(unit_bytes, max(corpus.nbytes // AUTO_UNITS, MIN_AUTO_UNIT)))


def _parquet_groups(f: SourceFile) -> list[tuple[int, int]]:
    """(rows, bytes) per row group, from the file's footer."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return []  # the task reports it: reading Parquet needs pyarrow
    from .storage import filesystem

    fs, path = filesystem(f.path)
    try:
        with fs.open(path, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
            return [(meta.row_group(g).num_rows, meta.row_group(g).total_byte_size)
                    for g in range(meta.num_row_groups)]
    except Exception:  # a corrupt file: one piece, and the task reports it as unreadable
        return []


def _pieces(f: SourceFile, size: int):
    if f.kind in (JSONL, BINIDX) and f.size > size:
        starts = list(range(0, f.size, size))
        for i, a in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else f.size + (1 if f.kind == BINIDX else 0)
            yield Piece(f, a, end, 0, min(end, f.size) - a), min(end, f.size) - a
    elif f.kind == PARQUET:
        groups = _parquet_groups(f)
        if not groups:
            yield Piece(f, 0, -1, 0, f.size), f.size
            return
        g, rows = 0, 0
        while g < len(groups):
            first, first_row, nbytes = g, rows, 0
            while g < len(groups) and (g == first or nbytes + groups[g][1] <= size):
                nbytes += groups[g][1]
                rows += groups[g][0]
                g += 1
            yield Piece(f, first, g, first_row, nbytes), nbytes
    else:
        end = f.size + (1 if f.kind == BINIDX else 0)
        yield Piece(f, 0, end if f.kind in (JSONL, BINIDX) else f.size, 0, f.size), f.size


def make_units(corpus: Corpus, unit_bytes: int) -> list[Unit]:
    size = unit_size(corpus, unit_bytes)
    units, current, filled = [], [], 0
    for f in corpus.files:
        for piece, nbytes in _pieces(f, size):
            if current and filled + nbytes > size:
                units.append(Unit(len(units), tuple(current)))
                current, filled = [], 0
            current.append(piece)
            filled += nbytes
    if current:
        units.append(Unit(len(units), tuple(current)))
    return units
