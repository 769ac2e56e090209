"""The shipped config files as the package ``clj.configs``, in a source checkout.

The files live in ``configs/`` at the top of the checkout; this package only
points there, so that a config file imports its shared helpers as
``from clj.configs.replay_common import ...`` whether clj runs from a
checkout (``python launch.py``, ``pip install -e .``) or from an installed
wheel, where the files themselves are ``clj/configs/*.py`` and this file is
not shipped (``setup.py`` maps the package ``clj.configs`` to ``configs/``).
"""
import os

__path__ = [os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")]
