"""Runs one continual-learning experiment from an ml_collections config.

    python launch.py --config=configs/derpp_digits.py [--config.seed=3 ...] [--workdir=runs/x]

Every config field can be overridden (``--config.replay.buffer_size=500``).
The config is validated before any work; a bad value stops the run with one
message naming it and what is valid.  A run whose workdir already holds a
checkpoint resumes from it (``--config.resume=False`` starts over in a fresh
workdir instead).
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<method>_<dataset>_seed<seed>).")


def main(argv):
    del argv
    from clj.config import ConfigError
    from clj.train import run

    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config=configs/<method>_<dataset>.py is required.")
    try:
        out = run(config, _WORKDIR.value)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "stopped_after_task" in out:
        print(f"[clj] stopped after task {out['stopped_after_task']} (stop_after_task); rerun to resume.")
        return 0
    m = out["metrics"]
    for setting, vals in m.items():
        def fmt(v):
            if isinstance(v, dict):
                return "n/a" if v.get("mean") is None else f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}"
            return "n/a" if v is None else f"{100 * v:.2f}"
        print(f"[clj] {setting}: final avg acc {fmt(vals['final_average_accuracy'])}%, "
              f"avg incremental acc {fmt(vals['average_incremental_accuracy'])}%, "
              f"forgetting {fmt(vals['forgetting'])}")
    return 0


if __name__ == "__main__":
    app.run(main)
