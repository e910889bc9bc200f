"""The layers ``Settings.load`` merges, read by pydantic-settings: the TOML file and the environment.

Imported by ``Settings.load`` only, so that ``import fanrag`` (every CLI command, every worker) does not
pay for pydantic-settings. Its sources read a ``BaseSettings`` class for the prefix, the delimiter and the
field types; ``_Sources`` is made from Settings' own fields, so a section is still declared once.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import create_model
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from .errors import ConfigError
from .settings import _SECTIONS, ENV_DELIMITER, ENV_PREFIX, StoreSettings

# enable_decoding=False: no variable is JSON. Lists and tables are comma-separated (the fields parse them),
# and a whole-section variable (FANRAG_CHUNK=...) reaches validation as a string, which names the section.
_Sources: type[BaseSettings] = create_model(  # type: ignore[call-overload]
    "_Sources", __base__=BaseSettings, **{name: (section, None) for name, section in _SECTIONS.items()})
_Sources.model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER,
                                           enable_decoding=False)

# The URL-style variables the docs show (FANRAG_VECTORS=pgvector://...) name store settings.
_ALIASES = {f"{ENV_PREFIX}{f.name.upper()}": f"{ENV_PREFIX}STORES{ENV_DELIMITER}{f.name.upper()}"
            for f in dataclasses.fields(StoreSettings) if f.name != "entity_extractor"}


def read_file(path: Path) -> dict[str, Any]:
    """The tables of a TOML config file; {} when there is none."""
    try:
        return TomlConfigSettingsSource(_Sources, toml_file=path)()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings ``FANRAG_<SECTION>__<FIELD>`` variables (and the store aliases) set, as tables."""
    return _EnvSource(env)()


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, with the aliases above; a variable
    ``FANRAG_<SECTION>__...`` for a section that does not exist is an error, not ignored."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = {**{_ALIASES[k]: v for k, v in env.items() if k in _ALIASES}, **env}  # full names win
        super().__init__(_Sources)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        for key in self._env:
            section, nested, _ = key.removeprefix(ENV_PREFIX).lower().partition(ENV_DELIMITER)
            if key.startswith(ENV_PREFIX) and nested and section not in _SECTIONS:
                raise ConfigError(section, f"unknown section (from {key}); known: {', '.join(_SECTIONS)}")
        return {key.lower(): value for key, value in self._env.items()}  # case-insensitive, as by default
