"""The training loop (:mod:`clj.train.loop`), the runtime choices
(:mod:`clj.train.runtime`) and checkpoints."""
from clj.train.loop import Runner, load_scenario, run
from clj.train.runtime import auto_chunking, choose_chunk, make_mesh, mesh_shape

__all__ = ["Runner", "auto_chunking", "choose_chunk", "load_scenario", "make_mesh", "mesh_shape", "run"]
