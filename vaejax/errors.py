"""Errors every layer may raise; each message names the fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work; the message names the fix."""
