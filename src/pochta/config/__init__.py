"""Typed settings from one TOML file, checked with messages that say what to fix."""

from pochta.config.load import ConfigError, load_settings
from pochta.config.settings import Settings

__all__ = ["ConfigError", "Settings", "load_settings"]
