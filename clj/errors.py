"""The error a bad config value raises (no dependencies: importable before JAX)."""


class ConfigError(ValueError):
    """A config value that cannot run; the message names it and what is valid."""
