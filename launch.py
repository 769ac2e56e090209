"""Runs one continual-learning experiment from an ml_collections config.

    python launch.py --config=configs/derpp_digits.py [--config.seed=3 ...] [--workdir=runs/x]
    python launch.py --config=configs/derpp_digits.py --describe   # each field and its meaning
    python launch.py --help                                        # methods, datasets, configs

Every config field can be overridden (``--config.replay.buffer_size=500``).
Every refusal (missing config file, unknown field, bad value, a workdir that
is a file, busy, or holds another config's run) comes before any work as one
line ``error: ...`` with exit status 2.  File-system faults (a workdir
that cannot be written, a full disk, a damaged workdir) are one line too
(status 2 before the run, 1 during it), and so is SIGINT/SIGTERM during
start-up (status 128 + the signal's number).  A run whose workdir holds a
checkpoint of the same config resumes from it (``--config.resume=False``
starts over).  See :mod:`clj.cli`.
"""

from clj.cli import main_entry

if __name__ == "__main__":
    main_entry()
