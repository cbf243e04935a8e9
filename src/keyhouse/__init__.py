"""keyhouse: a self-hosted API key service."""

__version__ = "0.1.0"
