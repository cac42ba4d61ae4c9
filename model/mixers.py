"""The registry of recurrent time mixers that can stand below GOLD (`model.lower`).

Like the reference's pluggable tmix modules: a block asks for a mixer by name, so a new recurrent
mixer is one registered class, not a change to the blocks or the model.
"""
from __future__ import annotations

from typing import Callable

_TIME_MIXERS: dict[str, type] = {}


def register_time_mixer(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in _TIME_MIXERS:
            raise ValueError(f"time mixer {name!r} is registered twice")
        cls.mixer_name = name
        _TIME_MIXERS[name] = cls
        return cls
    return add


def _load() -> None:
    from . import finch_time_mix  # noqa: F401  (registers the Finch family)


def known_mixers() -> tuple[str, ...]:
    _load()
    return tuple(_TIME_MIXERS)


def time_mixer(name: str) -> type:
    _load()
    if name not in _TIME_MIXERS:
        raise ValueError(f"model.lower={name!r}: unknown mixer; expected one of "
                         f"{', '.join(_TIME_MIXERS)}")
    return _TIME_MIXERS[name]
