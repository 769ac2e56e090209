"""NISPA: a fixed-density sparse network with stable and plastic units
and rewiring.  The method (``nispa``), its state (``state``), units
(``units``), phases (``phases``) and rewiring (``rewiring``).  Config block:
``nispa`` (``section``).  Importing this package imports no JAX."""
