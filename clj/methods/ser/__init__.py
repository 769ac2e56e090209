"""Saliency-modulated replay (SER) over DER++, ER-ACE and ER: the method
(``ser``), the saliency branch's state and pre-training (``saliency``,
``pretrain``) and its targets (``targets``).  Config block: ``ser``
(``section``), beside the baselines' ``replay``.  Importing this package
imports no JAX."""
