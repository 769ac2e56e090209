"""Class-IL with exemplars (PyCIL's family): iCaRL, WA and Replay
(``icarl``, ``icarl_phases``), MEMO and DER (Yan et al.) with grown networks
(``expand``), and what they share (``common``: the ``cil`` block's reader,
exemplar selection by herding, the phase optimiser).  Config block: ``cil``
(``section``).  Importing this package imports no JAX."""
