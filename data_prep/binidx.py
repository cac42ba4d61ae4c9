"""Pre-tokenized corpora in the binidx format (`name.bin` + `name.idx`) that Megatron's
MMapIndexedDataset defines and RWKV-LM's make_data.py writes: the paper's minipile comes this way.

`.idx`: the magic `MMIDIDX\\0\\0`, version (u64, 1), dtype code (u8), the number of sequences n
(u64) and of document-index entries d (u64), then n int32 sizes (tokens per sequence), n int64
pointers (byte offset of each sequence in `.bin`) and d int64 document starts (sequence numbers,
from 0 to n). Document j is sequences doc_idx[j] .. doc_idx[j+1]. `.bin`: the sequences' ids.

Opening checks what is O(1) (header, both file sizes); the per-sequence arrays are checked in
bounded chunks for the documents actually read, so a task reading a range of a billion-document
file touches only its range. Files are read through fsspec, so `s3://` prefixes work as paths do.
"""
from __future__ import annotations

import struct
from typing import Iterator

import numpy as np

from .errors import UserError

MAGIC = b"MMIDIDX\x00\x00"
HEADER = struct.Struct("<9sQBQQ")
# codes 6 and 7 are float dtypes in Megatron's table: not token ids, refused
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
CHUNK = 1 << 16  # sequences per read of the index arrays


def prefix_of(path: str) -> str | None:
    """`x.bin`, `x.idx` or `x` (when both exist) -> `x`; None when path is not a binidx input."""
    for suffix in (".bin", ".idx"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return None


def _size(path: str) -> int:
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    try:
        return int(fs.size(p))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (a binidx corpus needs both .bin and .idx)") from None


def _open(path: str):
    import fsspec

    return fsspec.open(path, "rb").open()


class BinIdx:
    """One binidx corpus, opened and checked; documents are read by number."""

    def __init__(self, prefix: str):
        self.prefix, self.idx_path, self.bin_path = prefix, prefix + ".idx", prefix + ".bin"
        idx_bytes, self.bin_bytes = _size(self.idx_path), _size(self.bin_path)
        with _open(self.idx_path) as f:
            head = f.read(HEADER.size)
        if len(head) < HEADER.size or head[:9] != MAGIC:
            raise UserError(f"{self.idx_path}: not a binidx index (no MMIDIDX header)")
        _, version, code, self.n_seq, self.n_doc_idx = HEADER.unpack(head)
        if version != 1:
            raise UserError(f"{self.idx_path}: binidx version {version}; only version 1 is defined")
        if code not in DTYPES:
            raise UserError(f"{self.idx_path}: dtype code {code} is not an integer token type "
                            f"(known: {', '.join(f'{k}={np.dtype(v).name}' for k, v in DTYPES.items())})")
        self.dtype = np.dtype(DTYPES[code]).newbyteorder("<")
        expected = HEADER.size + self.n_seq * 12 + self.n_doc_idx * 8
        if idx_bytes != expected:
            raise UserError(f"{self.idx_path}: {idx_bytes} bytes, but its header ({self.n_seq} sequences, "
                            f"{self.n_doc_idx} document entries) needs {expected}: truncated or not "
                            f"this format")
        if self.n_doc_idx < 1:
            raise UserError(f"{self.idx_path}: no document index")
        self.sizes_at = HEADER.size
        self.pointers_at = self.sizes_at + 4 * self.n_seq
        self.doc_idx_at = self.pointers_at + 8 * self.n_seq
        first, last = self._doc_idx(0, 1)[0], self._doc_idx(self.n_doc_idx - 1, self.n_doc_idx)[0]
        if first != 0 or last != self.n_seq:
            raise UserError(f"{self.idx_path}: the document index runs {first}..{last}, not 0..{self.n_seq}")
        if self.n_seq:
            end = int(self._pointers(self.n_seq - 1, self.n_seq)[0]) + \
                int(self._sizes(self.n_seq - 1, self.n_seq)[0]) * self.dtype.itemsize
            if end != self.bin_bytes:
                raise UserError(f"{self.bin_path}: {self.bin_bytes} bytes, but {self.idx_path} says its "
                                f"last sequence ends at byte {end}: the pair does not match "
                                f"(truncated, or another dtype)")
        elif self.bin_bytes:
            raise UserError(f"{self.bin_path}: {self.bin_bytes} bytes, but {self.idx_path} lists no sequences")

    @property
    def documents(self) -> int:
        return self.n_doc_idx - 1

    def _array(self, at: int, itemsize: int, dtype: str, start: int, stop: int) -> np.ndarray:
        with _open(self.idx_path) as f:
            f.seek(at + start * itemsize)
            return np.frombuffer(f.read((stop - start) * itemsize), dtype=dtype)

    def _sizes(self, start: int, stop: int) -> np.ndarray:
        return self._array(self.sizes_at, 4, "<i4", start, stop)

    def _pointers(self, start: int, stop: int) -> np.ndarray:
        return self._array(self.pointers_at, 8, "<i8", start, stop)

    def _doc_idx(self, start: int, stop: int) -> np.ndarray:
        return self._array(self.doc_idx_at, 8, "<i8", start, stop)

    def _check_sequences(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        sizes, pointers = self._sizes(start, stop), self._pointers(start, stop)
        if sizes.size and sizes.min() < 0:
            raise UserError(f"{self.idx_path}: negative sequence size at sequence "
                            f"{start + int(np.argmin(sizes))}")
        ends = pointers + sizes.astype(np.int64) * self.dtype.itemsize
        nxt = self._pointers(stop, stop + 1) if stop < self.n_seq else np.array([self.bin_bytes])
        bad = np.flatnonzero(np.concatenate([pointers[1:], nxt]) != ends)
        if start == 0 and pointers.size and pointers[0] != 0:
            bad = np.array([0])
        if bad.size:
            raise UserError(f"{self.idx_path}: sequence {start + int(bad[0])} does not end where the next "
                            f"begins (pointers and sizes disagree)")
        return sizes, pointers

    def read(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(document number, its ids) for documents start..stop-1; the index is checked on the way."""
        stop = self.documents if stop is None else stop
        if not 0 <= start <= stop <= self.documents:
            raise ValueError(f"document range {start}..{stop} outside 0..{self.documents}")
        with _open(self.bin_path) as data:
            for lo in range(start, stop, CHUNK):
                hi = min(stop, lo + CHUNK)
                bounds = self._doc_idx(lo, hi + 1)
                if np.any(np.diff(bounds) < 0):
                    raise UserError(f"{self.idx_path}: the document index decreases near document {lo}")
                s0, s1 = int(bounds[0]), int(bounds[-1])
                sizes, pointers = self._check_sequences(s0, s1)
                for j in range(hi - lo):
                    a, b = int(bounds[j]) - s0, int(bounds[j + 1]) - s0
                    n = int(sizes[a:b].sum())
                    if n == 0:
                        yield lo + j, np.zeros(0, self.dtype)
                        continue
                    data.seek(int(pointers[a]))
                    raw = data.read(n * self.dtype.itemsize)
                    if len(raw) != n * self.dtype.itemsize:
                        raise UserError(f"{self.bin_path}: ends inside document {lo + j}")
                    yield lo + j, np.frombuffer(raw, dtype=self.dtype)

    def _start_byte(self, document: int) -> int:
        seq = int(self._doc_idx(document, document + 1)[0])
        return self.bin_bytes if seq >= self.n_seq else int(self._pointers(seq, seq + 1)[0])

    def document_at_byte(self, offset: int) -> int:
        """The first document that starts at or after byte `offset` of the .bin (a binary search
        in the index, so a task can find its byte range's documents without a per-document list)."""
        lo, hi = 0, self.documents
        while lo < hi:
            mid = (lo + hi) // 2
            if self._start_byte(mid) < offset:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def tokens(self) -> int:
        """Total ids in the corpus (the .bin size over the dtype's width)."""
        return self.bin_bytes // self.dtype.itemsize
