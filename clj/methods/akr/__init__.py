"""Attentive knowledge replay (AKR) over iCaRL: the method (``akr``), its
attention module (``attention``), blending of exemplar and new pairs
(``blend``) and its losses (``loss``).  Config block: ``akr`` (``section``),
beside the class-IL family's ``cil``.  Importing this package imports no JAX."""
