"""Configuration: schema, loading, editing."""

from openclaw.config.loader import load_config, validate
from openclaw.config.schema import Config

__all__ = ["Config", "load_config", "validate"]
