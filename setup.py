"""Packaging beside pyproject.toml: ships configs/ as the package data
``clj.configs`` (``clj.config.configs_dir`` finds it there after
``pip install .``)."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["clj", "clj.*"]) + ["clj.configs"],
    package_dir={"clj.configs": "configs"},
)
