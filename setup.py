"""Packaging beside pyproject.toml: the package ``clj`` and the shipped
configs, ``configs/``, as its subpackage ``clj.configs``.

In a checkout, ``clj/configs/__init__.py`` only points the package at
``configs/``; the wheel is built from ``configs/`` itself (``package_dir``
below), so an installed ``clj/configs`` holds the config files and that
pointer is not shipped.  Config files import their shared helpers as
``clj.configs.<module>`` in both cases (``clj.config.configs_dir``).
"""
from setuptools import find_packages, setup

setup(
    packages=sorted(set(find_packages(include=["clj", "clj.*"])) | {"clj.configs"}),
    package_dir={"clj.configs": "configs"},
    package_data={"clj.data": ["lists/*.txt"]},   # class lists (ImageNet-100 of PyCIL)
)
