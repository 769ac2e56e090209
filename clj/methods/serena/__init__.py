"""SERENA: a random sparse cell per detected concept in an online
data-incremental stream.  The method (``serena``), its settings
(``settings``), cells and masks (``cells``), the concept-drift detector
(``detector``), routing and voting at test time (``route``, ``vote``).
Config block: ``serena`` (``section``).  Importing this package imports no
JAX."""
