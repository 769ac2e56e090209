"""The training loop (:mod:`clj.train.loop`) and checkpoints."""
from clj.train.loop import Runner, auto_chunking, load_scenario, make_mesh, run

__all__ = ["Runner", "auto_chunking", "load_scenario", "make_mesh", "run"]
