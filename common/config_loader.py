"""The one config loader: schema <- YAML file(s) <- dict layers <- dotlist overrides.

Every config in the project (model, run, compare, data_prep) goes through it, so an unknown key,
a wrong type, a missing file or a YAML syntax error is the same one-line UserError naming the key
or the file. Callers keep their own pre-steps (preset names, dotlist spelling) and value checks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .errors import ConfigError, MissingFileError


def _file_layer(path: str | Path, section: str | None):
    from omegaconf import OmegaConf

    if not Path(path).is_file():
        raise MissingFileError(f"config file {path} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # YAML syntax: yaml's errors share no base with ours
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"cannot read the config file {path}: {first}") from None
    return loaded.get(section, loaded) if section and hasattr(loaded, "get") else loaded


def _dotlist_layer(overrides: list[str], example: str):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. {example})")
        try:  # each value is parsed as YAML: name the one that does not parse
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, YAMLError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(f"override {item!r}: {first}") from None
    return OmegaConf.from_dotlist(list(overrides))


def load_config(schema: type, files: Iterable[str | Path] = (), overrides: Iterable[str] = (),
                layers: Iterable[dict] = (), section: str | None = None,
                example: str = "section.key=value", base: Iterable[dict] = ()):
    """The schema instance merged from `base` (dict defaults under everything given), `files`
    (each may hold the schema under `section`, or be it), dict `layers` and `overrides`; a
    failure is a ConfigError naming the key or the file."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .cli import one_line

    try:
        merged = [OmegaConf.structured(schema)] + [OmegaConf.create(layer) for layer in base]
        merged += [_file_layer(path, section) for path in files]
        merged += [OmegaConf.create(layer) for layer in layers]
        overrides = list(overrides)
        if overrides:
            merged.append(_dotlist_layer(overrides, example))
        return OmegaConf.to_object(OmegaConf.merge(*merged))
    except OmegaConfBaseException as err:  # an unknown key, a wrong type: named by one_line
        raise ConfigError(one_line(err)) from None
