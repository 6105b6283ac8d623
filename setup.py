"""Packaging hook: the top-level ``migrations/`` directory (the one copy in git) is
installed as the ``collector.migrations`` package, so wheels, editable installs and
the container all load the same SQL through ``importlib.resources``."""

from __future__ import annotations

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["collector", "collector.*"]), "collector.migrations"],
    package_dir={"collector.migrations": "migrations"},
)
