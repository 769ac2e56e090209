"""The baselines of the seeds' tables: fine-tuning and joint training, the ER
family (ER, DER, DER++; ``rehearsal``), ER-ACE, A-GEM, the online MIR and
CoPE, LwF, and the regularisation methods EWC, SI, MAS (``regularization``).
Config blocks: ``replay``, ``reg``, ``lwf``, ``online`` (``section``).  Importing this package imports
no JAX."""
