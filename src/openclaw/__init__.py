"""OpenClaw Gateway: self-hosted agents behind an OpenAI-compatible API."""

__version__ = "0.1.0"
