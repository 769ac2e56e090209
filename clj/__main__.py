"""``python -m clj --config=... [--describe | --help]``: see :mod:`clj.cli`."""
import sys

from clj.cli import main

sys.exit(main())
