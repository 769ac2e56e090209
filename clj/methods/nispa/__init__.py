"""NISPA: a fixed-density sparse network with stable and plastic units
and rewiring.  The method (``nispa``), its state (``state``), units
(``units``), phases (``phases``) and rewiring (``rewiring``).  Config block:
``nispa`` (``section``).  NISPA's sparse baselines: ``stl`` (STL and
STL-iso, block ``stl``) and ``clnp`` (CLNP, block ``clnp``), sharing
``holdout_epochs``.  Importing this package imports no JAX."""
