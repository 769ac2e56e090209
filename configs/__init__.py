"""The shipped config files, imported as the package ``clj.configs``.

Each ``<method>_<dataset>.py`` defines ``get_config([variant])``; the
``*_common.py`` files hold the parts several configs share, and a config
imports them as ``from clj.configs.<module> import ...`` (never
``configs.<module>``), which works from a checkout and from an installed
wheel alike.
"""
