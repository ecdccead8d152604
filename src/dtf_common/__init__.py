"""Contracts shared by the coordinator, the worker and the CLI: wire types, schemas, config, errors."""

__version__ = "0.1.0"
