"""The in-process path: a local directory is listed without walking the folders it skips, into
the same files fsspec's find gives; local calls overlap two at a time but finish in call order."""
import os
import threading
import time

import pytest

from data_prep import sources
from data_prep.executor import LocalExecutor


class _NoBar:
    def show(self, *_):
        pass


def _tree(root):
    for rel in ("a.py", "b/c.py", "b/d/e.txt", ".hidden/x.py", "b/.git/y.py", "site-packages/p/z.py",
                "b/__pycache__/c.pyc", "site-packages.py", "empty.py"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("" if rel == "empty.py" else rel * 3)
    os.symlink(root / "a.py", root / "link.py")
    os.symlink(root / "b", root / "linked_dir")


def test_the_local_listing_is_fsspecs_without_the_skipped_folders(tmp_path):
    _tree(tmp_path)
    fast = sources.find_corpus(str(tmp_path))
    fs, base = sources.filesystem(str(tmp_path))
    found = sorted((p[len(base) + 1:], info["size"]) for p, info in fs.find(base, detail=True).items()
                   if info["type"] == "file" and sources._visible(p[len(base) + 1:]))
    assert [(f.relpath, f.size) for f in fast.files] == found
    assert [f.relpath for f in fast.files] == ["a.py", "b/c.py", "b/d/e.txt", "empty.py", "site-packages.py"]
    assert fast.files[0].size == len("a.py" * 3)


def test_local_calls_overlap_at_most_two_and_finish_in_call_order():
    running, peak, lock = [0], [0], threading.Lock()

    def call(i, delay, progress=None):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(delay)
        with lock:
            running[0] -= 1
        return i * 10

    done = []
    calls = [(i, 0.05 if i % 2 == 0 else 0.01) for i in range(7)]
    out = LocalExecutor(workers=2).run(call, calls, 1, lambda i, r: done.append((i, r)), _NoBar())
    assert out == [[i * 10] for i in range(7)]
    assert done == [(i, i * 10) for i in range(7)]
    assert peak[0] == 2


def test_a_failing_local_call_stops_the_run_with_its_error():
    started = []

    def call(i, progress=None):
        started.append(i)
        if i == 1:
            raise ValueError("unit 1 is bad")
        time.sleep(0.02)
        return i

    with pytest.raises(ValueError, match="unit 1 is bad"):
        LocalExecutor(workers=2).run(call, [(i,) for i in range(20)], 1, lambda i, r: None, _NoBar())
    assert len(started) <= 4  # the window, not the whole list
