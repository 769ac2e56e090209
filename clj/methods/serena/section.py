"""The ``config.serena`` block (SERENA: a sparse cell per detected concept)
and its protocol knobs.  JAX-free."""
from __future__ import annotations

from clj.errors import ConfigError
from clj.methods.sections import Section, at_least, choice, in_interval, need

SERENA_PROTOCOLS = ("task_free", "official")
SERENA_FREEZE_MODES = ("exact", "faithful")
SERENA_MASK_DRAWS = ("exact_count", "bernoulli")
SERENA_DETECTORS = ("ema_acc", "running_since_task_start", "running_since_detection", "batch_acc")
SERENA_VOTES = ("max_confidence", "max_logit", "recency_vote", "mean_prob", "nearest_class_mean",
                "nearest_class_mean_union", "nearest_class_mean_cell0", "official_task_indexed")
# class-mean routing rule -> the space its means live in (clj.methods.serena.route)
SERENA_ROUTE_SPACES = {"nearest_class_mean": "pixels", "nearest_class_mean_union": "union",
                       "nearest_class_mean_cell0": "cell0"}
SERENA_ROUTE_STATS = ("", "all")
SERENA_NEW_CELL_INITS = ("zeros", "reinit_random")
SERENA_OPTIMS = ("sgd", "adam")
SERENA_MODELS = ("serena_mlp", "serena_resnet18", "serena_resnet18_reduced")  # clj.models.serena_nets
# protocol -> the value every "" knob takes.
SERENA_PROTOCOL_DEFAULTS = {
    "official": dict(freeze="faithful", mask_draw="bernoulli", detector="running_since_task_start",
                     vote="official_task_indexed", new_cell_init="zeros", min_window_mean=0.0),
    "task_free": dict(freeze="exact", mask_draw="exact_count", detector="ema_acc",
                      vote="nearest_class_mean", new_cell_init="reinit_random", min_window_mean=20.0),
}


def serena_resolved(v: dict) -> dict:
    """The effective protocol knobs of a ``config.serena`` block (merged over
    the defaults): ``""`` knobs take the protocol's value.

    Raises:
      ConfigError: an unknown protocol or knob value, a knob that contradicts
        ``protocol='official'``, or a task-free protocol with a knob that
        needs the true task boundaries or ids.
    """
    choice("serena", "protocol", v["protocol"], SERENA_PROTOCOLS)
    out = dict(SERENA_PROTOCOL_DEFAULTS[v["protocol"]])
    valid = dict(freeze=SERENA_FREEZE_MODES, mask_draw=SERENA_MASK_DRAWS, detector=SERENA_DETECTORS,
                 vote=SERENA_VOTES, new_cell_init=SERENA_NEW_CELL_INITS)
    for k, opts in valid.items():
        x = v[k]
        if x == "":
            continue
        choice("serena", k, x, opts)
        if v["protocol"] == "official" and x != out[k] and k != "new_cell_init":
            raise ConfigError(f"serena.{k}={x!r} contradicts serena.protocol='official' (which uses {out[k]!r}); "
                              f"use protocol='task_free' to change it.")
        out[k] = x
    if v["min_window_mean"] >= 0:
        out["min_window_mean"] = float(v["min_window_mean"])
    if v["protocol"] == "task_free" and out["vote"] == "official_task_indexed":
        raise ConfigError("serena.vote='official_task_indexed' needs the true task id at test time; valid with "
                          f"protocol='task_free': {', '.join(x for x in SERENA_VOTES if x != 'official_task_indexed')}.")
    if v["protocol"] == "task_free" and out["detector"] == "running_since_task_start":
        raise ConfigError("serena.detector='running_since_task_start' needs the true task boundaries; valid with "
                          "protocol='task_free': ema_acc, running_since_detection, batch_acc.")
    return out


def _check_serena(v, config) -> None:
    serena_resolved(v)
    kind = config.scenario.kind
    need(kind == "data_incremental", f"scenario.kind={kind!r} is invalid for method='serena': SERENA learns "
         "an online stream; valid: 'data_incremental'.")
    need(v["protocol"] != "official" or bool(config.scenario.get("reveal_boundaries", False)),
         "serena.protocol='official' resets its statistic at every true task boundary: set "
         "scenario.reveal_boundaries=True (or use protocol='task_free').")
    need(config.model.name in SERENA_MODELS, f"model.name={config.model.name!r} is not a SERENA backbone "
         f"(bias-free, stateless BN); valid: {', '.join(SERENA_MODELS)}.")
    need(config.optim.name in SERENA_OPTIMS,
         f"optim.name={config.optim.name!r} is invalid for SERENA; valid: {', '.join(SERENA_OPTIMS)}.")
    need(config.optim.get("schedule", "constant") == "constant",
         f"optim.schedule={config.optim.get('schedule')!r} is invalid for SERENA (constant lr, one optimizer per "
         "cell); valid: 'constant'.")
    in_interval("serena", v, "density", "(0, 1]")
    at_least("serena", v, 1, "window")
    in_interval("serena", v, "threshold", "(0, 1]")
    in_interval("serena", v, "ema_decay", "[0, 1)")
    need(v["route_stats"] in SERENA_ROUTE_STATS, f"serena.route_stats={v['route_stats']!r} is unknown; valid: "
         "'' (the class means the vote reads) or 'all' (pixel, union and cell-0 means).")
    need(int(v["max_cells"]) >= 0 and int(v["eval_cell_batch"]) >= 0,
         f"serena.max_cells={v['max_cells']} / eval_cell_batch={v['eval_cell_batch']} are invalid: they must be "
         ">= 0 (0 = automatic).")


SERENA = Section(
    "serena",
    dict(protocol="task_free", density=0.05, window=10, threshold=0.5, ema_decay=0.5, min_window_mean=-1.0,
         max_cells=0, nesterov=True, freeze="", mask_draw="", detector="", vote="", new_cell_init="",
         eval_cell_batch=0, route_stats=""),
    dict(protocol="'task_free' (detected concepts) or 'official' (the official code's task-indexed protocol)",
         density="1 - sparsity of each cell's masks (--sparsity 0.95 = 0.05)",
         window="W, batches in the drift detector's window (--window_size)",
         threshold="theta, drift threshold on the detector's statistic (--drift_threshold)",
         ema_decay="ema_acc detector: stat = d * stat + (1 - d) * batch accuracy",
         min_window_mean="fire only when the window mean (percent) is >= this (< 0: the protocol's value)",
         max_cells="cells preallocated (0 = num_tasks + 8; static shapes)",
         nesterov="Nesterov momentum in each cell's SGD",
         freeze="frozen-weight rule: exact | faithful ('' = the protocol's)",
         mask_draw="new cell masks: exact_count | bernoulli ('' = the protocol's)",
         detector="drift statistic: ema_acc | running_since_task_start | running_since_detection | batch_acc "
                  "('' = the protocol's)",
         vote="cell choice at test time ('' = the protocol's; see the VOTES of clj.methods.serena)",
         new_cell_init="a new cell's weights: zeros | reinit_random ('' = the protocol's)",
         eval_cell_batch="cells per vectorised forward at test time (0 = all at once)",
         route_stats="class means kept during training: '' = those the vote reads; 'all' = pixel, union and "
                     "cell-0 means (to compare the nearest_class_mean* rules on one trained model)"),
    _check_serena)
