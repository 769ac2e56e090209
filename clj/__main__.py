"""``python -m clj --config=... [--describe | --help]``: see :mod:`clj.cli`."""
from clj.cli import main_entry

main_entry()
