"""Shipped feature configs (package data, so an installed widedeep finds them too)."""

from importlib import resources


def shipped_config(name: str) -> str:
    """Path of a shipped config by file name, e.g. ``appstore.toml``."""
    return str(resources.files(__name__).joinpath(name))
