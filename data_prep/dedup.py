"""Exact dedup across the whole corpus as a shuffle: scan tasks split their documents' content
digests into partitions (by the digest's first word), one task per partition finds the digests
seen more than once, and each unit's build task receives the copies it must drop.

Which copy survives is fixed: the first in input order (lowest unit, then position in the unit),
whatever the number of partitions or workers. No task and not the driver holds more than one
partition's keys, or the dropped copies of its share of units.
"""
from __future__ import annotations

import numpy as np

from .scan_task import KEY_DTYPE

MAX_PARTITIONS = 16
MAX_GROUPS = 64  # dropped copies are handed back in this many ranges of units


def partitions_for(units: int) -> int:
    return max(1, min(MAX_PARTITIONS, units))


def groups_for(units: int) -> int:
    return max(1, min(MAX_GROUPS, units))


def group_of(unit: int, units: int, groups: int) -> int:
    return unit * groups // units


def find_duplicates(groups: int, units: int, *parts: np.ndarray, progress=None):
    """(how many, then per unit group the (unit, doc) of every copy after the first among these keys)."""
    table = np.concatenate(parts) if parts else np.zeros(0, KEY_DTYPE)
    order = np.lexsort((table["doc"], table["unit"], table["lo"], table["hi"]))
    table = table[order]
    same = (table["hi"][1:] == table["hi"][:-1]) & (table["lo"][1:] == table["lo"][:-1])
    dropped = table[1:][same]
    dropped = dropped[np.lexsort((dropped["doc"], dropped["unit"]))]
    group = dropped["unit"] * groups // units
    out = [np.stack([dropped["unit"][group == g], dropped["doc"][group == g]], axis=1) for g in range(groups)]
    return (len(dropped), *out)


def dropped_in(unit: int, parts) -> set[int]:
    """The documents of `unit` to drop, from the arrays of its unit group."""
    found: set[int] = set()
    for part in parts:
        if len(part):
            found.update(int(d) for d in part[part[:, 0] == unit, 1])
    return found
