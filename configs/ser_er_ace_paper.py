"""ER-ACE + SER with the paper's settings (see configs/ser_derpp_paper.py;
the ER-ACE hyperparameters of the paper's table are not in the release, so
this keeps lr 0.01, batch 8, minibatch 8, buffer 2000)."""
import os
import runpy


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    c = runpy.run_path(os.path.join(here, "ser_derpp_paper.py"))["get_config"]()
    c.method = "ser_er_ace"
    return c
