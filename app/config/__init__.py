"""Configuration: every setting defined once (app/config/sections.py), read from the
environment when create_app runs, never at import.

`configure` reads them once, checks each value by its type (a bad one is a ConfigError
naming the variable), and puts each in app.config under its flat key: the variable's name,
but DATABASE_URL is SQLALCHEMY_DATABASE_URI. `python -m app.config` prints the README's table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .reader import ConfigError, flat, keys, markdown_table, read, sections_of
from .sections import (
    Access,
    Database,
    Development,
    Http,
    Limits,
    Logging,
    Pages,
    Realtime,
    Redis,
    Services,
    Stats,
    Waits,
    normalize_database_url,
)
from .server import Server

__all__ = [
    "Config",
    "ConfigError",
    "Settings",
    "TestConfig",
    "configure",
    "markdown",
    "normalize_database_url",
]


@dataclass(frozen=True)
class Settings:
    """The application's settings, a section an attribute (Server is gunicorn's)."""

    logging: Logging = field(default_factory=Logging)
    http: Http = field(default_factory=Http)
    access: Access = field(default_factory=Access)
    database: Database = field(default_factory=Database)
    redis: Redis = field(default_factory=Redis)
    realtime: Realtime = field(default_factory=Realtime)
    waits: Waits = field(default_factory=Waits)
    stats: Stats = field(default_factory=Stats)
    services: Services = field(default_factory=Services)
    limits: Limits = field(default_factory=Limits)
    pages: Pages = field(default_factory=Pages)
    development: Development = field(default_factory=Development)

    @classmethod
    def load(
        cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Overrides (flat Flask keys) win over the environment, which wins over defaults."""
        return read(cls, environ, overrides or {})


class Config:
    """Flask's own keys, which are no environment setting: none outside tests."""


class TestConfig(Config):
    TESTING = True


def configure(app, overrides: Mapping[str, Any]) -> Settings:
    """Read the settings from the environment now, `overrides` winning, into app.config; an
    override that is no setting (SQLALCHEMY_ENGINE_OPTIONS, say) is set as given. The typed
    settings stay in app.extensions["settings"]."""
    settings = Settings.load(os.environ, overrides)
    known = keys(Settings)
    app.config.update(flat(settings))
    app.config.update({key: value for key, value in overrides.items() if key not in known})
    app.extensions["settings"] = settings
    return settings


def markdown() -> str:
    """The README's configuration table: every section, the server's last."""
    return markdown_table([cls for _, cls in sections_of(Settings)] + [Server])
