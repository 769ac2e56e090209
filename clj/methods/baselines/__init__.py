"""The baselines of the seeds' tables: fine-tuning and joint training, the ER
family (ER, DER, DER++; ``rehearsal``), ER-ACE, A-GEM, LwF, the
regularisation methods EWC, SI, MAS (``regularization``), and the online
baselines MIR, CoPE, GDumb and GSS.  Config blocks: ``replay``, ``reg``, ``lwf``,
``online``, ``gdumb``, ``gss`` (``section``).  Importing this package imports
no JAX."""
